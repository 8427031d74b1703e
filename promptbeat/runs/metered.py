"""A Jinja sandbox that counts the work a template does against a budget of steps and seconds."""
import contextvars
import functools
import inspect
import re
import string
import time
from collections.abc import Iterator, MappingView, Sized

from jinja2 import Environment, nodes, pass_context
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum
from jinja2.visitor import NodeTransformer

# A step is one loop iteration, call, attribute read or output, plus one per character or item of
# every value such an operation takes or makes. Operations whose result can be far larger than their
# inputs (repetition, padding, formatting widths, replace, join) are charged their result's size
# *before* they run, so no single operation can allocate past the budget.
_budget = contextvars.ContextVar("promptbeat_template_budget", default=None)
# Names of the filters the template is rewritten to use; no user template has a reason to call them.
_ITEMS, _CONCAT, _TEXT = "promptbeat_items", "promptbeat_concat", "promptbeat_text"
_PERCENT_FIELD = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d*)(?:\.(\*|\d*))?")
_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "to_bytes"})
_LIPSUM = inspect.signature(generate_lorem_ipsum)


class BudgetExceeded(Exception):
    """The render used up its steps or its time; the message says which."""


class Budget:
    """The steps and the deadline left to one render."""

    def __init__(self, max_steps, max_seconds):
        self.max_steps, self.max_seconds = max_steps, max_seconds
        self.steps_left = max_steps
        self.deadline = time.monotonic() + max_seconds

    def spend(self, steps):
        self.steps_left -= steps
        if self.steps_left < 0:
            raise BudgetExceeded(f"step budget of {self.max_steps} exceeded")
        if time.monotonic() > self.deadline:
            raise BudgetExceeded(f"time budget of {self.max_seconds:g} s exceeded")

    def __enter__(self):
        self._token = _budget.set(self)
        return self

    def __exit__(self, *exc_info):
        _budget.reset(self._token)


def spend(steps):
    budget = _budget.get()
    if budget is not None:
        budget.spend(steps)


def weight(value):
    """Characters and items in a value, nested ones included; counting stops past the steps left."""
    budget = _budget.get()
    return _weight(value, budget.steps_left + 1 if budget else float("inf"))


def _weight(value, limit):
    if isinstance(value, (str, bytes, range)):
        return len(value)
    if isinstance(value, int):
        return 1 + value.bit_length() // 64
    if isinstance(value, dict):
        items = (part for pair in value.items() for part in pair)
    elif isinstance(value, (list, tuple, set, frozenset, MappingView)):
        items = value
    else:
        return 1
    total = 1
    for item in items:
        total += _weight(item, limit - total)
        if total > limit:
            break
    return total


def _weigh_all(args, kwargs):
    return sum(map(weight, args)) + sum(map(weight, kwargs.values()))


def _charged(iterable):
    for item in iterable:
        spend(1)
        yield item


def _binop_size(operator, left, right):
    """The size of a binary operation's result, known before it runs, where it can outgrow its operands."""
    if operator == "*":
        for sequence, times in ((left, right), (right, left)):
            if isinstance(times, int) and isinstance(sequence, (str, bytes, list, tuple)):
                return weight(sequence) * max(times, 0)
    if operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
        return max(left.bit_length(), 1) * right // 64
    if operator in ("*", "//", "%") and isinstance(left, int) and isinstance(right, int):
        # Multiplying and dividing big integers is superlinear in their length; small ones cost nothing.
        return (left.bit_length() // 64) * (right.bit_length() // 64)
    if operator == "%" and isinstance(left, str):
        return _percent_size(left, right if isinstance(right, (tuple, dict)) else (right,))
    return 0


def _percent_size(template, values):
    """Widths and precisions of printf-style fields ('*' takes them from the values)."""
    numbers = [v for v in (values.values() if isinstance(values, dict) else values) if isinstance(v, int)]
    size = 0
    for width, precision in _PERCENT_FIELD.findall(template):
        for field in (width, precision):
            size += sum(max(n, 0) for n in numbers) if field == "*" else int(field or 0)
    return size


def _format_size(template, args, kwargs):
    """Widths in str.format fields; a nested field ({:{}}) may take any of the numbers given."""
    size = 0
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError:
        return 0  # format() itself will refuse it
    for _literal, _name, spec, _conversion in fields:
        if spec and "{" in spec:
            size += sum(max(v, 0) for v in (*args, *kwargs.values()) if isinstance(v, int))
        size += sum(int(number) for number in re.findall(r"\d+", spec or ""))
    return size


def _method_size(method, args, kwargs):
    """The size of the result of a method of a str, bytes or int, where it can outgrow its inputs."""
    method = inspect.unwrap(method)  # the sandbox wraps str.format in a function of its own
    owner, name = getattr(method, "__self__", None), getattr(method, "__name__", "")
    if not isinstance(owner, (str, bytes, int)):
        return 0
    number = args[0] if args else kwargs.get("length", kwargs.get("tabsize"))  # to_bytes(length=), expandtabs(tabsize=)
    if name in _WIDTH_METHODS and isinstance(number, int):
        return max(number, 0)
    if not isinstance(owner, (str, bytes)):
        return 0
    if name == "expandtabs":
        return len(owner) * max(number if isinstance(number, int) else 8, 0)
    if name == "replace" and len(args) >= 2:
        return _replace_size(owner, *args[:2])
    if name == "join" and args and isinstance(args[0], Sized):
        return len(owner) * len(args[0])
    if name == "translate" and args and isinstance(args[0], dict):
        return len(owner) * max(map(weight, args[0].values()), default=0)
    if name in ("format", "format_map") and isinstance(owner, str):
        return _format_size(owner, args, kwargs)
    return 0


def _replace_size(text, old, new):
    if not isinstance(text, (str, bytes)) or type(old) is not type(text) or type(new) is not type(text):
        return 0
    return (text.count(old) if old else len(text) + 1) * len(new)


def _lines(text):
    return str(text).count("\n") + 1


# The growth of filters whose result can outgrow their inputs, from their bound arguments.
_FILTER_SIZES = {
    "center": lambda a: max(a["width"], 0) if isinstance(a["width"], int) else 0,
    "indent": lambda a: _lines(a["s"]) * (a["width"] if isinstance(a["width"], int) else len(str(a["width"]))),
    "wordwrap": lambda a: (2 * len(str(a["s"])) // max(a["width"], 1) + _lines(a["s"]))
    * len(a["wrapstring"] or "\n") if isinstance(a["width"], int) else 0,
    "join": lambda a: len(str(a["d"])) * len(a["value"]) if isinstance(a["value"], Sized) else 0,
    "replace": lambda a: _replace_size(str(a["s"]), str(a["old"]), str(a["new"])),
    "format": lambda a: _percent_size(str(a["value"]), a["kwargs"] or a["args"]),
    "batch": lambda a: max(a["linecount"], 0) if a["fill_with"] is not None else 0,
    "slice": lambda a: max(a["slices"], 0) if isinstance(a["slices"], int) else 0,
    # Rounding an integer to -n digits computes 10 ** n.
    "round": lambda a: -a["precision"] // 19 if isinstance(a["precision"], int) and a["precision"] < 0 else 0,
    # Adding up lists copies every partial sum: quadratic.
    "sum": lambda a: len(a["iterable"]) * weight(a["iterable"])
    if isinstance(a["start"], (list, tuple)) and isinstance(a["iterable"], (list, tuple)) else 0,
}


def _value_signature(function):
    """The filter's signature from its value on: the context, eval context or environment it may be
    passed comes first in the call whether or not the signature shows it."""
    signature = inspect.signature(function)
    parameters = list(signature.parameters.values())
    if parameters and parameters[0].name in ("context", "eval_ctx", "environment"):
        parameters = parameters[1:]
    return signature.replace(parameters=parameters)


def _metered_filter(name, function):
    size = _FILTER_SIZES.get(name)
    signature = _value_signature(function) if size else None

    @functools.wraps(function)  # keeps the pass_context/pass_environment mark
    def metered(*args, **kwargs):
        # Lazy inputs (map, select...) are counted item by item as they are read.
        args = [list(_charged(arg)) if isinstance(arg, Iterator) else arg for arg in args]
        spend(1 + _weigh_all(args, kwargs))
        if size:
            passed = 1 if args and isinstance(args[0], (Context, nodes.EvalContext, Environment)) else 0
            bound = signature.bind(*args[passed:], **kwargs)
            bound.apply_defaults()
            spend(size(bound.arguments))
        result = function(*args, **kwargs)
        spend(weight(result))
        return result

    return metered


class _Metering(NodeTransformer):
    """Rewrites a parsed template so that what runs without a sandbox hook is counted too."""

    def visit_For(self, node):
        node = self.generic_visit(node)
        node.iter = _filter(node.iter, _ITEMS, node)
        return node

    def visit_Concat(self, node):
        node = self.generic_visit(node)
        return _filter(nodes.List(node.nodes), _CONCAT, node)

    def visit_TemplateData(self, node):
        # Literal text repeated by a loop into a {% set %} block never reaches the output cap.
        return _filter(nodes.Const(node.data), _TEXT, node)


def _filter(expression, name, origin):
    rewritten = nodes.Filter(expression, name, [], [], None, None)
    rewritten.set_lineno(origin.lineno)
    return rewritten.set_environment(origin.environment)


# pass_context keeps Jinja from running them once at compile time instead of at every use.
@pass_context
def _items(_context, iterable):
    return _charged(iterable)


@pass_context
def _concat(_context, parts):
    spend(sum(map(weight, parts)))
    return "".join(map(str, parts))


@pass_context
def _text(_context, data):
    return data


class MeteredEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with every call, operator, attribute read, loop and output counted."""

    intercepted_binops = frozenset({"+", "*", "**", "%", "//"})

    def __init__(self, **options):
        super().__init__(finalize=self._finalize, **options)
        self.filters = {name: _metered_filter(name, function) for name, function in self.filters.items()}
        self.filters.update({_ITEMS: _items, _CONCAT: _concat, _TEXT: _text})

    def compile_metered(self, source):
        """Parse, rewrite for metering and compile (inside a Budget: folding constants spends steps)."""
        return self.from_string(_Metering().visit(self.parse(source)))

    @staticmethod
    def _finalize(value):
        spend(1 + weight(value))
        return value

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (Jinja's own signature)
        args = [list(_charged(arg)) if isinstance(arg, Iterator) else arg for arg in args]
        spend(1 + _weigh_all(args, kwargs) + _method_size(__obj, args, kwargs))
        if __obj is generate_lorem_ipsum:
            bound = _LIPSUM.bind(*args, **kwargs)
            bound.apply_defaults()
            paragraphs, words = bound.arguments["n"], bound.arguments["max"]
            if isinstance(paragraphs, int) and isinstance(words, int):
                spend(max(paragraphs, 0) * max(words, 0) * 12)  # at most 12 characters a word
        result = super().call(__context, __obj, *args, **kwargs)
        spend(weight(result))
        return result

    def call_binop(self, context, operator, left, right):
        spend(1 + weight(left) + weight(right) + _binop_size(operator, left, right))
        result = super().call_binop(context, operator, left, right)
        spend(weight(result))
        return result

    def getattr(self, obj, attribute):
        result = super().getattr(obj, attribute)
        spend(1 + weight(result))
        return result

    def getitem(self, obj, argument):
        result = super().getitem(obj, argument)
        spend(1 + weight(result))
        return result
