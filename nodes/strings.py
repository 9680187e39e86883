"""Text nodes with ComfyUI's names and inputs (comfy_extras/nodes_string.py): joining, cutting, measuring, case,
trimming, plain and regex find/replace, comparisons, formatting, and reading a value out of JSON.

Regex nodes take Python `re` patterns with ComfyUI's flags (case-insensitive by default). As in ComfyUI, an
invalid pattern makes Regex Match answer false and Regex Extract answer "", while Regex Replace reports it as an
error naming the input. Format Text fills `{a}`-style fields like Python's str.format but refuses attribute
access (`{a.__class__}`), which would reach into the server's objects. Knows nothing of models, HTTP or the
executor.
"""
from __future__ import annotations

import _string
import json
import re
import string
from typing import Any, Mapping, Sequence

STRING_CATEGORY = "utils/string"
TEXT_CATEGORY = "text"  # ComfyUI's category for the text nodes it added later
VALUE_NAMES = tuple(string.ascii_lowercase)


def _text(tooltip: str, multiline: bool = True, **options: Any) -> tuple[str, dict[str, Any]]:
    return ("STRING", {"multiline": multiline, "tooltip": tooltip, **options})


def _flag(default: bool, tooltip: str) -> tuple[str, dict[str, Any]]:
    return ("BOOLEAN", {"default": default, "tooltip": tooltip})


CASE_INSENSITIVE = _flag(True, "Letters match regardless of case.")
MULTILINE = _flag(False, "^ and $ match at the start and end of every line, not only of the whole text.")
DOTALL = _flag(False, "When enabled, the dot (.) character will match any character including newline characters. "
                      "When disabled, dots won't match newlines.")


def regex_flags(case_insensitive: bool, multiline: bool, dotall: bool) -> int:
    return (re.IGNORECASE if case_insensitive else 0) | (re.MULTILINE if multiline else 0) | (
        re.DOTALL if dotall else 0)


class StringConcatenate:
    DESCRIPTION = "Joins two texts, with the delimiter between them."
    CATEGORY = STRING_CATEGORY
    RETURN_TYPES = ("STRING",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "string_a": _text("The first text."),
            "string_b": _text("The text appended after it."),
            "delimiter": _text("Put between the two texts (may be empty).", multiline=False, default=""),
        }}

    def execute(self, string_a: str, string_b: str, delimiter: str) -> tuple[str]:
        return (delimiter.join((string_a, string_b)),)


class StringSubstring:
    DESCRIPTION = ("The characters from start up to (not including) end, Python slice rules: negative positions "
                   "count from the end, positions past the end are clipped.")
    CATEGORY = STRING_CATEGORY
    RETURN_TYPES = ("STRING",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "string": _text("The text to cut."),
            "start": ("INT", {"tooltip": "The first character's position (0 is the first; negative from the end)."}),
            "end": ("INT", {"tooltip": "The position after the last character (negative counts from the end)."}),
        }}

    def execute(self, string: str, start: int, end: int) -> tuple[str]:
        return (string[start:end],)


class StringLength:
    DESCRIPTION = "The number of characters in the text."
    CATEGORY = STRING_CATEGORY
    RETURN_TYPES = ("INT",)
    RETURN_NAMES = ("length",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"string": _text("The text to measure.")}}

    def execute(self, string: str) -> tuple[int]:
        return (len(string),)


class CaseConverter:
    DESCRIPTION = "Changes the text's letter case: all upper, all lower, first letter capital, or Title Case."
    CATEGORY = STRING_CATEGORY
    RETURN_TYPES = ("STRING",)
    FUNCTION = "execute"
    MODES = {"UPPERCASE": str.upper, "lowercase": str.lower, "Capitalize": str.capitalize, "Title Case": str.title}

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "string": _text("The text to convert."),
            "mode": (list(cls.MODES), {"tooltip": "Capitalize: first letter upper, the rest lower. Title Case: "
                                                  "every word's first letter upper."}),
        }}

    def execute(self, string: str, mode: str) -> tuple[str]:
        return (self.MODES[mode](string),)


class StringTrim:
    DESCRIPTION = "Removes whitespace (spaces, tabs, line breaks) from both ends of the text, or one end."
    CATEGORY = STRING_CATEGORY
    RETURN_TYPES = ("STRING",)
    FUNCTION = "execute"
    MODES = {"Both": str.strip, "Left": str.lstrip, "Right": str.rstrip}

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "string": _text("The text to trim."),
            "mode": (list(cls.MODES), {"tooltip": "Which end(s) to trim."}),
        }}

    def execute(self, string: str, mode: str) -> tuple[str]:
        return (self.MODES[mode](string),)


class StringReplace:
    DESCRIPTION = "Replaces every occurrence of a text (exactly, case-sensitive) with another."
    CATEGORY = STRING_CATEGORY
    RETURN_TYPES = ("STRING",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "string": _text("The text to change."),
            "find": _text("The text to look for."),
            "replace": _text("What to put in its place (may be empty, to delete it)."),
        }}

    def execute(self, string: str, find: str, replace: str) -> tuple[str]:
        return (string.replace(find, replace),)


class StringContains:
    DESCRIPTION = "Whether the text contains the substring."
    CATEGORY = STRING_CATEGORY
    RETURN_TYPES = ("BOOLEAN",)
    RETURN_NAMES = ("contains",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "string": _text("The text to search."),
            "substring": _text("The text to look for."),
            "case_sensitive": _flag(True, "Off: letters match regardless of case."),
        }}

    def execute(self, string: str, substring: str, case_sensitive: bool) -> tuple[bool]:
        if not case_sensitive:
            string, substring = string.lower(), substring.lower()
        return (substring in string,)


class StringCompare:
    DESCRIPTION = "Whether string_a starts with, ends with or equals string_b."
    CATEGORY = STRING_CATEGORY
    RETURN_TYPES = ("BOOLEAN",)
    FUNCTION = "execute"
    MODES = {"Starts With": str.startswith, "Ends With": str.endswith, "Equal": str.__eq__}

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "string_a": _text("The text to test."),
            "string_b": _text("The text to compare it with."),
            "mode": (list(cls.MODES), {"tooltip": "The comparison."}),
            "case_sensitive": _flag(True, "Off: letters match regardless of case."),
        }}

    def execute(self, string_a: str, string_b: str, mode: str, case_sensitive: bool) -> tuple[bool]:
        if not case_sensitive:
            string_a, string_b = string_a.lower(), string_b.lower()
        return (self.MODES[mode](string_a, string_b),)


class RegexMatch:
    DESCRIPTION = "Whether the regular expression matches anywhere in the text (false for an invalid pattern)."
    CATEGORY = STRING_CATEGORY
    RETURN_TYPES = ("BOOLEAN",)
    RETURN_NAMES = ("matches",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "string": _text("The text to search."),
            "regex_pattern": _text("A Python regular expression."),
            "case_insensitive": CASE_INSENSITIVE,
            "multiline": MULTILINE,
            "dotall": DOTALL,
        }}

    def execute(self, string: str, regex_pattern: str, case_insensitive: bool, multiline: bool,
                dotall: bool) -> tuple[bool]:
        try:
            return (re.search(regex_pattern, string, regex_flags(case_insensitive, multiline, dotall)) is not None,)
        except re.error:
            return (False,)


class RegexExtract:
    DESCRIPTION = ("Extracts what a regular expression matches: the first match, all matches, or a capture group "
                   "of the first match or of every match (several results one per line; \"\" when nothing "
                   "matches or the pattern is invalid).")
    CATEGORY = STRING_CATEGORY
    RETURN_TYPES = ("STRING",)
    FUNCTION = "execute"
    MODES = ("First Match", "All Matches", "First Group", "All Groups")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "string": _text("The text to search."),
            "regex_pattern": _text("A Python regular expression."),
            "mode": (list(cls.MODES), {"tooltip": "All Matches with groups in the pattern gives each match's "
                                                  "first group, as Python's findall does."}),
            "case_insensitive": CASE_INSENSITIVE,
            "multiline": MULTILINE,
            "dotall": DOTALL,
            "group_index": ("INT", {"default": 1, "min": 0, "max": 100,
                                    "tooltip": "The capture group for the Group modes (0: the whole match)."}),
        }}

    def execute(self, string: str, regex_pattern: str, mode: str, case_insensitive: bool, multiline: bool,
                dotall: bool, group_index: int) -> tuple[str]:
        try:
            pattern = re.compile(regex_pattern, regex_flags(case_insensitive, multiline, dotall))
        except re.error:
            return ("",)
        return ("\n".join(_extract(pattern, string, mode, group_index)),)


def _extract(pattern: re.Pattern, string: str, mode: str, group_index: int) -> list[str]:
    if mode == "First Match":
        match = pattern.search(string)
        return [match.group(0)] if match else []
    if mode == "All Matches":
        return [found[0] if isinstance(found, tuple) else found for found in pattern.findall(string)]
    if mode == "First Group":
        matches = [match for match in [pattern.search(string)] if match is not None]
    else:  # All Groups: as in ComfyUI, only the matches of a pattern that has groups count
        matches = [match for match in pattern.finditer(string) if match.groups()]
    # a group that does not exist, or did not take part in the match, gives nothing
    return [match.group(group_index) for match in matches
            if len(match.groups()) >= group_index and match.group(group_index) is not None]


class RegexReplace:
    DESCRIPTION = "Find and replace text using regex patterns."
    CATEGORY = STRING_CATEGORY
    RETURN_TYPES = ("STRING",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "string": _text("The text to change."),
                "regex_pattern": _text("A Python regular expression."),
                "replace": _text("The replacement; \\1 or \\g<name> insert a captured group."),
            },
            "optional": {
                "case_insensitive": CASE_INSENSITIVE,
                "multiline": MULTILINE,
                "dotall": DOTALL,
                "count": ("INT", {"default": 0, "min": 0, "max": 100, "tooltip": (
                    "Maximum number of replacements to make. Set to 0 to replace all occurrences (default). Set "
                    "to 1 to replace only the first match, 2 for the first two matches, etc.")}),
            },
        }

    def execute(self, string: str, regex_pattern: str, replace: str, case_insensitive: bool = True,
                multiline: bool = False, dotall: bool = False, count: int = 0) -> tuple[str]:
        try:
            pattern = re.compile(regex_pattern, regex_flags(case_insensitive, multiline, dotall))
        except re.error as error:
            raise ValueError(f"regex_pattern: {regex_pattern!r} is not a valid regular expression ({error})") from None
        try:
            return (pattern.sub(replace, string, count=count),)
        except re.error as error:
            raise ValueError(f"replace: {replace!r} is not a valid replacement for this pattern ({error})") from None


class _FieldFormatter(string.Formatter):
    """str.format's fields, with the values' attributes out of reach: `{a}`, `{a:>8.2f}`, `{a!r}` and indexing
    into lists and dicts (`{a[0]}`, `{a[key]}`) work, `{a.attribute}` is refused."""

    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[Any, str]:
        first, rest = _string.formatter_field_name_split(field_name)
        value = self.get_value(first, args, kwargs)
        for is_attribute, key in rest:
            if is_attribute:
                raise ValueError(f"f_string: {{{field_name}}} reads an attribute, which is not allowed")
            if not isinstance(value, (list, tuple, dict, str)):
                raise ValueError(f"f_string: {{{field_name}}} indexes a {type(value).__name__}, which is not allowed")
            value = value[key]
        return value, first


class StringFormat:
    DESCRIPTION = ("Same as Python's string format method: fills {a}, {b}, ... with the connected values, with "
                   "Python's format options ({a:.2f}, {b:>5}); reading attributes ({a.x}) is not allowed.")
    CATEGORY = TEXT_CATEGORY
    RETURN_TYPES = ("STRING",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        values = {f"values.{name}": ("*", {"tooltip": f"The value of the field {{{name}}}."}) for name in VALUE_NAMES}
        return {
            "required": {"f_string": _text("The text with {a}-style fields to fill.", default="{a}")},
            "optional": values,
        }

    def execute(self, f_string: str, **inputs: Any) -> tuple[str]:
        values = {name: inputs[f"values.{name}"] for name in VALUE_NAMES if f"values.{name}" in inputs}
        try:
            return (_FieldFormatter().format(f_string, **values),)
        except KeyError as error:
            raise ValueError(f"f_string: the field {{{error.args[0]}}} has no connected value") from None
        except IndexError:
            raise ValueError("f_string: positional fields ({} or {0}) have no value; name them {a}, {b}, ...") from None
        except (ValueError, TypeError) as error:
            message = str(error)
            raise ValueError(message if message.startswith("f_string") else f"f_string: {message}") from None


class JsonExtractString:
    DESCRIPTION = ("Extract a key's value from the first valid JSON object in the text, including Markdown code "
                   "blocks.")
    CATEGORY = TEXT_CATEGORY
    RETURN_TYPES = ("STRING",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "json_string": _text("Text that contains a JSON object somewhere (an LLM's answer, a code block)."),
            "key": _text("The top-level key to read; \"\" when the object lacks it.", multiline=False),
        }}

    def execute(self, json_string: str, key: str) -> tuple[str]:
        decoder = json.JSONDecoder()
        for brace in re.finditer(r"\{", json_string):
            try:
                data, _ = decoder.raw_decode(json_string, brace.start())
            except json.JSONDecodeError:
                continue
            value = data.get(key)
            return ("" if value is None else str(value),)
        return ("",)


NODE_CLASS_MAPPINGS: dict[str, type] = {node.__name__: node for node in (
    StringConcatenate, StringSubstring, StringLength, CaseConverter, StringTrim, StringReplace, StringContains,
    StringCompare, RegexMatch, RegexExtract, RegexReplace, StringFormat, JsonExtractString,
)}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "StringConcatenate": "Concatenate",
    "StringSubstring": "Substring",
    "StringLength": "Length",
    "CaseConverter": "Case Converter",
    "StringTrim": "Trim",
    "StringReplace": "Replace",
    "StringContains": "Contains",
    "StringCompare": "Compare",
    "RegexMatch": "Regex Match",
    "RegexExtract": "Regex Extract",
    "RegexReplace": "Regex Replace",
    "StringFormat": "Format Text",
    "JsonExtractString": "Extract Text from JSON",
}
