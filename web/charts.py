"""Small server-rendered SVG charts: no script and no chart library in the browser."""
from markupsafe import Markup, escape


def _points(values, width, height, pad):
    low, high = min(values), max(values)
    span = (high - low) or 1
    step = (width - 2 * pad) / max(len(values) - 1, 1)
    return [(pad + i * step, height - pad - (v - low) / span * (height - 2 * pad)) for i, v in enumerate(values)]


def sparkline(values, label, unit="", width=112, height=28, css_class="spark"):
    """A small line chart of values (oldest first): its scale (max, min) beside it and a tooltip on each point.

    One value is a single dot; none is a dash, which screen readers hear as "no runs yet".
    """
    if not values:
        return Markup(f'<span class="spark-empty" title="{escape(label)}">—</span>')
    suffix = f" {unit}" if unit else ""
    plot = width - 36  # room on the right for the scale
    coords = _points(values, plot, height, 3) if len(values) > 1 else [(plot / 2, height / 2)]
    # Formatted and escaped once each: a dashboard page draws a thousand points or more.
    pairs = [(f"{x:.1f}", f"{y:.1f}") for x, y in coords]
    points = " ".join(f"{x},{y}" for x, y in pairs)
    count = len(values)
    named, unit_text = escape(label), escape(suffix)  # the values are the database's integers
    dots = "".join(
        f'<circle cx="{x}" cy="{y}" r="2.5"><title>{named}: {int(value):,}{unit_text} ({i}/{count})</title></circle>'
        for i, ((x, y), value) in enumerate(zip(pairs, values), 1))
    title = f"{label}: {min(values):,}–{max(values):,}{suffix}, newest {values[-1]:,}{suffix}"
    return Markup(
        f'<svg class="{css_class}" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
        f'<polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{points}"/><g class="dots">{dots}</g>'
        f'<text class="tick" x="{plot + 3}" y="9">{_short(max(values))}</text>'
        f'<text class="tick" x="{plot + 3}" y="{height - 2}">{_short(min(values))}</text></svg>'
    )


def _short(value):
    """A scale label that fits beside a sparkline: 950, 1.2k, 3.4M."""
    for limit, letter in ((1_000_000, "M"), (1_000, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.1f}".rstrip("0").rstrip(".") + letter
    return str(value)


def line_chart(values, label, unit, width=480, height=140):
    """A larger chart for the task page: line, dots, and the min and max values on the axis."""
    if len(values) < 2:
        return Markup("")
    pad = 24
    coords = _points(values, width, height, pad)
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2"/>' for x, y in coords)
    title = f"{label} ({unit}), oldest to newest: min {min(values)}, max {max(values)}"
    return Markup(
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
        f'<title>{escape(title)}</title>'
        f'<line class="axis" x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}"/>'
        f'<text x="2" y="{pad}" class="tick">{max(values)}</text>'
        f'<text x="2" y="{height - pad}" class="tick">{min(values)}</text>'
        f'<polyline fill="none" stroke="currentColor" stroke-width="2" points="{points}"/>'
        f'<g class="dots">{dots}</g></svg>'
    )
