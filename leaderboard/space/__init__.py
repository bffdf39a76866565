"""What a Hugging Face Space needs to host the leaderboard (see :mod:`.bundle`)."""
