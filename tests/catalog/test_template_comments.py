"""Django's {# #} comment is one line only: a multi-line one is printed on the page as text."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_no_template_has_a_multi_line_hash_comment():
    templates = [p for d in ("models_catalog/templates", "templates") for p in (ROOT / d).rglob("*.html")]
    assert templates
    leaking = [f"{p.relative_to(ROOT)}:{p.read_text()[:m.start()].count(chr(10)) + 1}"
               for p in templates for m in re.finditer(r"\{#(.*?)#\}", p.read_text(), flags=re.S) if "\n" in m.group(1)]
    assert leaking == [], "use {% comment %} for these: " + ", ".join(leaking)
