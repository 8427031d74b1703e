"""Model output as safe HTML: Markdown rendered by markdown-it-py, then sanitised by nh3."""
import re

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup

# Raw HTML in Markdown is shown as text; nh3 is the second wall against anything that slips through.
_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table").enable("strikethrough")
ALLOWED_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "code", "pre", "blockquote",
    "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td",
}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "th": {"align"}, "td": {"align"}, "ol": {"start"}, "code": {"class"}}
# A fenced block's language, as markdown-it names it ("language-python"): one word, so a stylesheet or a
# highlighter can use it; any other class is dropped.
LANGUAGE_CLASS = re.compile(r"language-[A-Za-z0-9_+#.-]{1,40}")


def _keep_attribute(tag, attribute, value):
    if attribute == "class":
        return value if tag == "code" and LANGUAGE_CLASS.fullmatch(value) else None
    return value


def markdown_to_html(text):
    """Sanitised HTML for a model's Markdown output."""
    if not text:
        return Markup("")
    html = _markdown.render(text)
    return Markup(nh3.clean(
        html, tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES, attribute_filter=_keep_attribute,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    ))
