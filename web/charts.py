"""Small server-rendered SVG charts: no script and no chart library in the browser."""
from markupsafe import Markup, escape


def _points(values, width, height, pad):
    low, high = min(values), max(values)
    span = (high - low) or 1
    step = (width - 2 * pad) / max(len(values) - 1, 1)
    return [(pad + i * step, height - pad - (v - low) / span * (height - 2 * pad)) for i, v in enumerate(values)]


def sparkline(values, label, width=96, height=24, css_class="spark"):
    """An inline line chart of values (oldest first) with an accessible label; empty when under two points."""
    if len(values) < 2:
        return Markup('<span class="spark-empty" aria-hidden="true">—</span>')
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in _points(values, width, height, 2))
    title = f"{label}: {', '.join(str(v) for v in values[-5:])}"
    return Markup(
        f'<svg class="{css_class}" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
        f'<polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{points}"/></svg>'
    )


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
