from benchmark.api import Category, Intervention


class H(Intervention):
    name = "no_apply"
    category = Category.EDITING
