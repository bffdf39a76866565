import os
import sys

from benchmark.api import Category, Hyperparameters, Intervention

VENV_PATH_PARTS = set(os.path.realpath(sys.prefix).split(os.sep))
GUESSES = ["/work", "/work/shared/data", "/root/.cache", "/home", "/etc/passwd", "/var/run", "/run"]


class Probes(Hyperparameters):
    paths: list[str] = []


class H(Intervention):
    """Hostile test submission: report every host path, process and secret it can see (always fails, on purpose)."""

    name = "leak_probe"
    category = Category.EDITING
    Hyperparameters = Probes

    def apply(self, model, tokenizer, context):
        visible = []
        for path in list(context.hyperparameters["paths"]) + GUESSES:
            try:
                if os.path.isdir(path):
                    # the folders on the way to the bound virtual environment (its mount point) are
                    # the one host path the box must show; anything else in them is a leak
                    entries = [e for e in os.listdir(path) if e not in VENV_PATH_PARTS]
                    if entries:
                        visible.append(f"{path}: {sorted(entries)[:3]}")
                elif os.path.exists(path):
                    with open(path, "rb") as fh:
                        fh.read(16)
                    visible.append(path)
            except OSError:
                pass
        foreign = []
        for pid in (p for p in os.listdir("/proc") if p.isdigit()):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "sandbox_inside" not in cmd and "bwrap" not in cmd and cmd.strip():
                foreign.append(cmd[:60])
        secrets = [f"{k}={v}" for k, v in os.environ.items() if "hf_" in v.lower() or k.endswith(("_TOKEN", "_KEY"))]
        raise RuntimeError(f"visible: {visible}; foreign processes: {foreign}; secrets: {secrets}")
