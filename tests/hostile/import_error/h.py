from benchmark.api import Category, Intervention
import a_module_that_does_not_exist  # noqa: F401
