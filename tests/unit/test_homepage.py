"""The page ``GET /`` answers (serving/homepage.py): self-contained, and its policy allows its own inline code only.
That the policy lets the page run at all is checked in a real browser (tests/integration/test_page.py)."""

from __future__ import annotations

import re

from dogbreed.serving import homepage


def test_the_page_is_package_data_and_fetches_nothing_from_elsewhere():
    status, body, headers = homepage.page()
    html = body.decode()
    assert status == 200 and html.startswith("<!doctype html>") and 'fetch("/invocations"' in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "the page loads something from elsewhere"
    assert headers["x-content-type-options"] == "nosniff" and headers["content-type"].startswith("text/html")


def test_the_policy_names_each_inline_block_by_hash_and_nothing_inline_else():
    policy = homepage.content_security_policy("<style>a{}</style><script>1</script><script>2</script>")
    directives = dict(part.split(" ", 1) for part in policy.split("; "))
    assert directives["default-src"] == "'none'" and directives["connect-src"] == "'self'"
    assert len(directives["script-src"].split()) == 2 and len(directives["style-src"].split()) == 1
    assert "unsafe" not in policy
    # a page with no script gets none
    assert "script-src 'none'" in homepage.content_security_policy("<p>no script</p>")
