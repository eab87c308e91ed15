"""What every page must be when read without a script: its content in the HTML, no inline
script or event handler attributes, and the keyboard basics (a skip link first, to a target
that exists; every link a real link; nothing taken out of the tab order)."""

from __future__ import annotations

import html
import re

FOCUSABLE = re.compile(r"<(a|button|input|select|textarea|summary)\b([^>]*)>", re.S)


def text_of(page: str) -> str:
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def assert_readable(page: str, *texts: str) -> None:
    words = text_of(page)
    for text in texts:
        assert text in words, f"{text!r} is not in the page's HTML"
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page, re.S)
    assert scripts, "the page has no script tag at all"
    for attributes, body in scripts:
        assert 'src="/static/' in attributes and not body.strip(), "an inline script"
    assert not re.search(r"<[^>]*\son[a-z]+\s*=", page, re.I), "an event handler attribute"
    main = page.split("<body", 1)[1]
    focusable = [
        (tag, attrs)
        for tag, attrs in FOCUSABLE.findall(main)
        if not re.search(r'type="hidden"', attrs)
    ]
    assert focusable, "nothing to focus"
    first_tag, first_attrs = focusable[0]
    assert first_tag == "a" and 'class="skip"' in first_attrs and 'href="#main"' in first_attrs
    assert '<main id="main">' in page, "the skip link's target"
    assert "autofocus" not in page, "focus taken past the skip link"
    assert "tabindex" not in page, "something is taken out of (or forced into) the tab order"
    for tag, attrs in focusable:
        if tag == "a":
            assert re.search(r'\bhref="[^"]+"', attrs), f"a link without href: {attrs}"
    # Every visible form field has a name a screen reader can say: a label around it or an
    # aria-label (checked on the fields outside any <label>).
    unlabelled = re.sub(r"<label\b.*?</label>", "", main, flags=re.S)
    for tag, attrs in FOCUSABLE.findall(unlabelled):
        if tag in ("input", "select", "textarea") and 'type="hidden"' not in attrs:
            named = re.search(r'\bid="([^"]+)"', attrs)
            labelled = named and f'<label for="{named.group(1)}"' in page
            assert labelled or "aria-label=" in attrs, f"a field without a label: <{tag}{attrs}>"
