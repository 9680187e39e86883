"""A safe evaluator for the math expressions of ComfyMathExpression: no `eval`, only a whitelist.

The text is parsed with `ast` as one Python expression and walked node by node. Allowed: numbers, strings, True,
False, None; the names given (the node's inputs and `values`); the arithmetic, bitwise, comparison and boolean
operators; `x if c else y`; indexing and slicing; and calls of the functions in `FUNCTIONS` (ComfyUI's list:
sum, min, max, abs, round, pow, sqrt, ceil, floor, log, log2, log10, sin, cos, tan, int, float). Anything else
(attributes, lambdas, comprehensions, list literals, other functions) is an `ExpressionError`.

So that a short text cannot keep the server busy or fill its memory, the expression's length and nesting are
bounded, `**` refuses operands beyond 4,000,000 as ComfyUI's evaluator does, `pow()` exponents beyond 4,000 as
ComfyUI's node does, and whole numbers may not grow past `MAX_INT_BITS` bits nor strings past
`MAX_STRING_LENGTH` characters. Knows nothing of nodes, tensors or the engine.
"""
from __future__ import annotations

import ast
import math
import operator
from typing import Any, Callable, Mapping

MAX_EXPRESSION_LENGTH = 10_000  # characters
MAX_DEPTH = 200  # nested operations (a chain of n additions nests n deep)
MAX_POWER = 4_000_000  # largest |base| or |exponent| of `**`
MAX_POW_EXPONENT = 4_000  # largest |exponent| of pow()
MAX_INT_BITS = 100_000  # largest whole number, in bits (about 30,000 digits)
MAX_STRING_LENGTH = 100_000


class ExpressionError(ValueError):
    """The expression is not allowed, not valid, or failed to evaluate; the message says why."""


def _check_int_size(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ExpressionError(f"a whole number in the expression grows beyond {MAX_INT_BITS} bits")
    return value


def _check_length(length: int) -> None:
    if length > MAX_STRING_LENGTH:
        raise ExpressionError(f"text in the expression grows beyond {MAX_STRING_LENGTH} characters")


def _bits(value: Any) -> float:
    """An upper bound on the bits of |value| (ints only; bools count as ints)."""
    return abs(int(value)).bit_length()


def _safe_add(left: Any, right: Any) -> Any:
    if hasattr(left, "__len__") and hasattr(right, "__len__"):
        _check_length(len(left) + len(right))
    return left + right


def _safe_mult(left: Any, right: Any) -> Any:
    for sequence, count in ((left, right), (right, left)):
        if hasattr(sequence, "__len__") and isinstance(count, int):
            _check_length(len(sequence) * count)
    if isinstance(left, int) and isinstance(right, int) and _bits(left) + _bits(right) > MAX_INT_BITS + 1:
        raise ExpressionError(f"a whole number in the expression grows beyond {MAX_INT_BITS} bits")
    return left * right


def _int_power_too_big(base: Any, exponent: Any) -> bool:
    """Whether int ** int would exceed MAX_INT_BITS (a non-negative whole exponent of a whole base)."""
    if not (isinstance(base, int) and isinstance(exponent, int)) or exponent <= 0 or abs(base) <= 1:
        return False
    return exponent * math.log2(abs(base)) > MAX_INT_BITS


def _safe_power(base: Any, exponent: Any) -> Any:
    if _magnitude(base) > MAX_POWER or _magnitude(exponent) > MAX_POWER:
        raise ExpressionError(f"{base} ** {exponent} is too large to evaluate (operands up to {MAX_POWER})")
    if _int_power_too_big(base, exponent):
        raise ExpressionError(f"{base} ** {exponent} grows beyond {MAX_INT_BITS} bits")
    return base**exponent


def _magnitude(value: Any) -> float:
    try:
        return abs(value)
    except TypeError:
        return 0.0


def _safe_lshift(left: Any, right: Any) -> Any:
    if isinstance(left, int) and isinstance(right, int) and right > 0 and _bits(left) + right > MAX_INT_BITS:
        raise ExpressionError(f"{left} << {right} grows beyond {MAX_INT_BITS} bits")
    return left << right


def _sum(*arguments: Any) -> Any:
    """sum(values) and sum(a, b, c) alike, as in ComfyUI."""
    if len(arguments) == 1 and hasattr(arguments[0], "__iter__"):
        return sum(arguments[0])
    return sum(arguments)


def _pow(base: Any, exponent: Any) -> Any:
    if _magnitude(exponent) > MAX_POW_EXPONENT:
        raise ExpressionError(f"exponent {exponent} exceeds the maximum allowed ({MAX_POW_EXPONENT})")
    if _int_power_too_big(base, exponent):
        raise ExpressionError(f"pow({base}, {exponent}) grows beyond {MAX_INT_BITS} bits")
    return pow(base, exponent)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sum": _sum, "min": min, "max": max, "abs": abs, "round": round, "pow": _pow,
    "sqrt": math.sqrt, "ceil": math.ceil, "floor": math.floor,
    "log": math.log, "log2": math.log2, "log10": math.log10,
    "sin": math.sin, "cos": math.cos, "tan": math.tan,
    "int": int, "float": float,
}

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: _safe_add, ast.Sub: operator.sub, ast.Mult: _safe_mult, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: _safe_power,
    ast.BitAnd: operator.and_, ast.BitOr: operator.or_, ast.BitXor: operator.xor,
    ast.LShift: _safe_lshift, ast.RShift: operator.rshift,
}
_UNARY: dict[type, Callable[[Any], Any]] = {
    ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_, ast.Invert: operator.invert,
}
_COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.In: lambda left, right: left in right, ast.NotIn: lambda left, right: left not in right,
    ast.Is: operator.is_, ast.IsNot: operator.is_not,
}
_CONSTANT_TYPES = (bool, int, float, complex, str, type(None))


def evaluate(expression: str, names: Mapping[str, Any]) -> Any:
    """The value of `expression` with `names` bound; an ExpressionError for anything not allowed or failing."""
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(f"the expression is longer than {MAX_EXPRESSION_LENGTH} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as error:
        raise ExpressionError(f"invalid syntax: {error.msg}") from None
    except (RecursionError, MemoryError, ValueError):
        raise ExpressionError("the expression is nested too deeply") from None
    try:
        return _Evaluator(names).visit(tree.body, 0)
    except ExpressionError:
        raise
    except (ArithmeticError, ValueError, TypeError, IndexError, KeyError) as error:
        raise ExpressionError(f"{type(error).__name__}: {error}") from None


class _Evaluator:
    def __init__(self, names: Mapping[str, Any]) -> None:
        self.names = names

    def visit(self, node: ast.AST, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise ExpressionError(f"the expression is nested more than {MAX_DEPTH} levels deep")
        handler = getattr(self, f"_{type(node).__name__}", None)
        if handler is None:
            raise ExpressionError(f"{_describe(node)} is not allowed in a math expression")
        return handler(node, depth + 1)

    def _Constant(self, node: ast.Constant, depth: int) -> Any:
        if not isinstance(node.value, _CONSTANT_TYPES):
            raise ExpressionError(f"{type(node.value).__name__} literals are not allowed in a math expression")
        if isinstance(node.value, str):
            _check_length(len(node.value))
        return node.value

    def _Name(self, node: ast.Name, depth: int) -> Any:
        if node.id in self.names:
            return self.names[node.id]
        raise ExpressionError(f"'{node.id}' is not defined (connect an input named {node.id!r}, or use one of "
                              f"{', '.join(sorted(self.names)) or 'no inputs'})")

    def _BinOp(self, node: ast.BinOp, depth: int) -> Any:
        operation = _BINARY.get(type(node.op))
        if operation is None:
            raise ExpressionError(f"the operator {type(node.op).__name__} is not allowed in a math expression")
        return _check_int_size(operation(self.visit(node.left, depth), self.visit(node.right, depth)))

    def _UnaryOp(self, node: ast.UnaryOp, depth: int) -> Any:
        return _UNARY[type(node.op)](self.visit(node.operand, depth))

    def _BoolOp(self, node: ast.BoolOp, depth: int) -> Any:
        """`and` / `or` with Python's short circuit: the deciding operand's value."""
        stop_when = not isinstance(node.op, ast.And)
        value: Any = None
        for operand in node.values:
            value = self.visit(operand, depth)
            if bool(value) == stop_when:
                return value
        return value

    def _Compare(self, node: ast.Compare, depth: int) -> bool:
        left = self.visit(node.left, depth)
        for operation, comparator in zip(node.ops, node.comparators):
            right = self.visit(comparator, depth)
            if not _COMPARE[type(operation)](left, right):
                return False
            left = right
        return True

    def _IfExp(self, node: ast.IfExp, depth: int) -> Any:
        return self.visit(node.body if self.visit(node.test, depth) else node.orelse, depth)

    def _Call(self, node: ast.Call, depth: int) -> Any:
        if not isinstance(node.func, ast.Name):
            raise ExpressionError(f"calling {_describe(node.func)} is not allowed in a math expression")
        if node.func.id not in FUNCTIONS:
            raise ExpressionError(f"function '{node.func.id}' is not available (available: {', '.join(FUNCTIONS)})")
        if any(isinstance(argument, ast.Starred) for argument in node.args) or any(
                keyword.arg is None for keyword in node.keywords):
            raise ExpressionError("* and ** arguments are not allowed in a math expression")
        arguments = [self.visit(argument, depth) for argument in node.args]
        keywords = {keyword.arg: self.visit(keyword.value, depth) for keyword in node.keywords}
        return _check_int_size(FUNCTIONS[node.func.id](*arguments, **keywords))

    def _Subscript(self, node: ast.Subscript, depth: int) -> Any:
        return self.visit(node.value, depth)[self.visit(node.slice, depth)]

    def _Slice(self, node: ast.Slice, depth: int) -> slice:
        parts = (node.lower, node.upper, node.step)
        return slice(*(None if part is None else self.visit(part, depth) for part in parts))


def _describe(node: ast.AST) -> str:
    return {"Attribute": "attribute access", "Lambda": "lambda", "List": "a list literal", "Tuple": "a tuple",
            "Dict": "a dict literal", "Set": "a set literal", "NamedExpr": "assignment (:=)",
            "JoinedStr": "an f-string"}.get(type(node).__name__, type(node).__name__)
