"""Model output is data, never code: markup from the model renders inert."""

from __future__ import annotations

import base64
from typing import Any

from tests.web.conftest import Visitor
from tests.web.pages import send, wait_reply

# A 1×1 transparent PNG, served for the one image the user agrees to load.
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)

DANGEROUS = """() => {
    const bad = [];
    for (const node of document.querySelectorAll('#message-list .content *')) {
        const tag = node.tagName.toLowerCase();
        if (['script', 'iframe', 'object', 'embed', 'style', 'form', 'math', 'details',
             'input', 'textarea', 'link', 'meta', 'base'].includes(tag)) bad.push(tag);
        if (tag === 'svg' && !node.classList.contains('icon')) bad.push('svg');
        for (const attr of node.attributes) {
            if (attr.name.startsWith('on') || attr.name === 'style' || attr.name === 'srcset')
                bad.push(tag + '@' + attr.name);
        }
        if (tag === 'img' && node.getAttribute('src')) bad.push('img@src');
        const href = node.getAttribute('href');
        if (href !== null && !/^https?:|^mailto:/i.test(href)) bad.push('href=' + href);
    }
    return bad;
}"""


def test_xss_payloads_from_the_model_render_inert(visitor: Visitor) -> None:
    page = visitor.login()
    images: list[str] = []

    def image(route: Any) -> None:
        images.append(route.request.url)
        route.fulfill(status=200, content_type="image/png", body=PIXEL)

    visitor.context.route("https://images.example/**", image)
    send(page, "XSS 보여줘")
    text = wait_reply(page)
    # Each payload arrived split across many deltas and was re-rendered each time.
    assert page.evaluate("window.__xss") is None
    assert visitor.dialogs == []
    assert page.evaluate("window.__violations") == []
    assert page.evaluate(DANGEROUS) == []
    assert visitor.outside == []
    assert images == []
    # Raw HTML is shown as text, not dropped silently and not obeyed.
    assert "<script>window.__xss = 1; alert('script')</script>" in text
    assert "<iframe" in text
    assert "끝." in text
    # javascript: and data: links lose their target and stay plain text.
    hrefs = page.eval_on_selector_all(
        "#message-list .message-assistant .content a", "els => els.map(a => a.getAttribute('href'))"
    )
    assert hrefs == [None, None]
    # The session survived: the raw same-origin logout link was shown, not followed.
    assert page.is_visible("#app-view")

    # Images are placeholders until the user agrees, one image at a time.
    buttons = page.locator("#message-list .ext-image-button")
    # The two markdown images; raw <img> tags were shown as text.
    assert buttons.count() == 2
    cat = page.locator("#message-list .ext-image-button", has_text="cat")
    cat.click()
    page.wait_for_selector("#message-list img.md-image")
    assert images == ["https://images.example/cat.png"]
    assert (
        page.locator("#message-list img.md-image").get_attribute("referrerpolicy") == "no-referrer"
    )
    assert visitor.outside == []
    assert page.evaluate("window.__xss") is None


def test_user_text_is_shown_as_typed(visitor: Visitor) -> None:
    page = visitor.login()
    typed = "<b>굵게</b> <img src=x onerror=alert(1)> **별표**"
    send(page, typed)
    wait_reply(page)
    user = page.locator("#message-list .message-user .content").first
    assert user.inner_text() == typed
    assert user.locator("*").count() == 0
    assert visitor.dialogs == []
