"""The Jinja2 environment for hot list partials (DESIGN.md: "Jinja2 is fine for hot list
partials if Django's engine cannot meet a speed goal"): rows only, no URL reversing or
translation inside; the Django template around them keeps both."""
from jinja2 import Environment


def environment(**options) -> Environment:
    options.setdefault("autoescape", True)
    return Environment(**options)
