"""Answers as text: the last ``\\boxed{}`` of a completion, gold answers as datasets ship them, and normalisation.

This is the one place where gold answers are read and normalised. Training data (`math_data.prepare_math_dataset`),
evaluation benchmarks (`soup_trl.evaluation.benchmarks`) and grading (`grading.grade`) all go through it:

- `gold_text` turns whatever a dataset stores (a list, a stringified list, a number, a worked solution, ``None``)
  into one string, kept as written otherwise: it is what the ``solution`` column and result files show;
- `normalize_answer` turns a gold answer or the content of a completion's box into one line of LaTeX for
  math-verify (it starts from `gold_text`, so it accepts the same values).
"""

from __future__ import annotations

import ast
import re
from typing import Any

# ----------------------------------------------------------------------------------------------------------------------
# Boxed answers
# ----------------------------------------------------------------------------------------------------------------------

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# What may separate two boxes that together form one list answer: "\boxed{1}, \boxed{2}", "\boxed{1} and \boxed{2}".
_BOX_SEPARATOR_RE = re.compile(r"^\s*\$?\s*(?:,|;|\\quad|\\qquad|\\text\{\s*(?:and|or|,)\s*\}|and|or)?\s*\$?\s*$")


def _matching_braces(text: str) -> dict[int, int]:
    """Position of each "{" -> position of its "}", in one pass (escaped \\{ and \\} are not braces)."""
    pairs, stack, i = {}, [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            pairs[stack.pop()] = i
        i += 1
    return pairs


def _box_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every complete ``\\boxed{...}`` / ``\\fbox{...}`` (and ``\\boxed 5``) in `text`.

    Boxes inside boxes are not listed; an unclosed box (truncated completion) is ignored.
    """
    spans: list[tuple[int, int, str]] = []
    braces: dict[int, int] | None = None
    for match in _BOX_RE.finditer(text):
        if spans and match.start() < spans[-1][1]:
            continue  # inside the previous box
        i = match.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            braces = _matching_braces(text) if braces is None else braces
            if i in braces:
                spans.append((match.start(), braces[i] + 1, text[i + 1 : braces[i]]))
        elif i > match.end() or (i < len(text) and text[i] not in "\\$"):
            # "\\boxed 5": the argument is the next token
            token = re.match(r"[^\s$]+", text[i:])
            if token:
                spans.append((match.start(), i + token.end(), token.group(0)))
    return spans


def last_boxed_content(text: str) -> str | None:
    """Content of the last ``\\boxed{}`` of `text`, or None.

    Boxes that directly precede it, separated only by a comma, "and", "or" or spacing, are joined with commas:
    ``\\boxed{1} and \\boxed{2}`` gives ``"1,2"``.
    """
    spans = _box_spans(text)
    if not spans:
        return None
    parts = [spans[-1][2]]
    for prev, nxt in zip(reversed(spans[:-1]), reversed(spans[1:])):
        if not _BOX_SEPARATOR_RE.match(text[prev[1] : nxt[0]]):
            break
        parts.append(prev[2])
    return ",".join(reversed(parts))


# ----------------------------------------------------------------------------------------------------------------------
# Gold answers as datasets ship them
# ----------------------------------------------------------------------------------------------------------------------


def _as_string_list(text: str) -> list[str] | None:
    """The strings of a stringified list of strings (``"['$2^{1009}$']"``), else None (``"[0, 1]"`` is an interval)."""
    if not (text.startswith("[") and text.endswith("]")):
        return None
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if isinstance(parsed, list) and parsed and all(isinstance(v, str) for v in parsed):
        return parsed
    return None


_GSM8K_ANSWER_RE = re.compile(r"(?:^|\n)####\s*([^\n]+?)\s*$")
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}\b)")


def gold_text(value: Any) -> str:
    """A gold answer as one string, whatever the dataset stores, otherwise kept as written.

    - a one-element list is unwrapped (OlympiadBench's ``final_answer: ["$2$"]``), a longer one joined with ", ";
      a stringified list of strings (``"['$2^{1009}$']"``) is read as that list;
    - a whole number stored as a float (AMC's ``27.0``) is written as an integer, other numbers in their shortest
      form; ``None`` is ``""``;
    - a worked solution (text containing a ``\\boxed{}`` after other text) is reduced to its last box;
    - a GSM8K-style worked solution, whose last line is ``#### ANSWER``, is reduced to that answer (thousands
      separators dropped: ``#### 1,200`` is ``1200``).
    """
    if isinstance(value, str):
        value = _as_string_list(value.strip()) or value
    if isinstance(value, list | tuple):
        return gold_text(value[0]) if len(value) == 1 else ", ".join(gold_text(v) for v in value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        return str(int(value)) if float(value).is_integer() else repr(value)
    text = str(value).strip()
    gsm8k = _GSM8K_ANSWER_RE.search(text)
    if gsm8k is not None:
        return _THOUSANDS_RE.sub("", gsm8k.group(1).strip())
    if "\\boxed" in text and not text.startswith("\\boxed"):  # a worked solution: its last box is the answer
        boxed = last_boxed_content(text)
        if boxed is not None:
            return boxed.strip()
    return text


# ----------------------------------------------------------------------------------------------------------------------
# Normalisation for math-verify
# ----------------------------------------------------------------------------------------------------------------------

_DELIMITER_RE = re.compile(r"\\\[|\\\]|\\\(|\\\)|(?<!\\)\$")
_TRAILING_RE = re.compile(r"(?:\s|\\[,;:! ]|\\quad|\\qquad|[.;:])+$")
_LEADING_RE = re.compile(r"^(?:\s|\\[,;:! ]|\\quad|\\qquad)+")
# "1./3", "(2.,3.)": a number written with a bare trailing dot
_BARE_DOT_RE = re.compile(r"(?<=\d)\.(?=\s*(?:[-+*/)\],}=]|$))")
# "E_1", "e_{0}": the LaTeX parser reads E/e as Euler's number and then fails on the subscript
_E_SUBSCRIPT_RE = re.compile(r"(?<![A-Za-z\\])([Ee])(?=\s*_)")
# \text{...}-like commands. math-verify strips a trailing "\text{unit}", but its unit regex also deletes everything
# from the *first* \text{ to the end when the answer ends with "}" (so "\frac{\mathrm{x}}{2}" becomes "\frac{").
_TEXT_CMD_RE = re.compile(
    r"\\(?:text|textrm|textnormal|textbf|textit|textup|mathrm|mathit|mathbf|mathsf|mbox|rm)\s*\{([^{}]*)\}"
)
_TRAILING_UNIT_TAIL_RE = re.compile(r"^\s*(?:\^\s*\{?\s*\d\s*\}?)?\s*$")
# 4.5e33, 1e-8, 2.7778E-6: scientific notation, which LaTeX parsing would read as 4.5 * Euler's e * 33
_SCI_RE = re.compile(r"(?<![\w\\.])(\d+(?:\.\d*)?|\.\d+)[eE]([+-]?\d+)(?![\w.])")
# np.arcsin(...), math.sqrt(...): Python spelled answers (Minerva has a few)
_PY_FUNC_RE = re.compile(
    r"\b(?:np|numpy|math|sympy|sp)\.(arcsin|arccos|arctan|sinh|cosh|tanh|sin|cos|tan|exp|log|sqrt|pi)\b"
)
# _{\max}, _{\odot}, _{\text{eff}}, _\mathrm{p}: subscripts made of commands, which the parser rejects
_SUBSCRIPT_RE = re.compile(r"_\s*(\{(?:[^{}]|\{[^{}]*\})*\}|\\[A-Za-z]+)")
_SUBSCRIPT_WRAPPER_RE = re.compile(r"\\(?:text|mathrm|textrm|mathit|textit|mathbf|textbf|rm|operatorname)\b")


def _plain_subscript(match: re.Match) -> str:
    content = match.group(1)
    if "\\" not in content:
        return match.group(0)
    plain = _SUBSCRIPT_WRAPPER_RE.sub("", content)
    plain = re.sub(r"[\\{}\s~]", "", plain)
    return f"_{{{plain}}}" if plain.isalnum() else match.group(0)


def _unwrap_inner_text(s: str) -> str:
    """Replace ``\\text{x}`` by ``x`` except where it is the whole answer or a trailing unit (math-verify's case)."""
    matches = list(_TEXT_CMD_RE.finditer(s))
    if not matches:
        return s
    out, pos = [], 0
    for m in matches:
        whole = m.start() == 0 and not s[m.end() :].strip()
        trailing = m is matches[-1] and bool(_TRAILING_UNIT_TAIL_RE.match(s[m.end() :]))
        out.append(s[pos : m.start()])
        out.append(m.group(0) if whole or trailing else m.group(1).replace("~", " "))
        pos = m.end()
    out.append(s[pos:])
    return "".join(out)


def normalize_answer(answer: Any) -> str:
    """Turn a gold answer, or the content of a completion's box, into one line of LaTeX for math-verify.

    - reads non-string values as `gold_text` does (lists, numbers, ``None``), then takes the last ``\\boxed{}`` if
      there is one; drops math delimiters (``$``, ``\\(``, ``\\[``; an escaped ``\\$`` currency sign is kept),
      newlines, and leading/trailing spacing and punctuation;
    - scientific notation ``4.5e33`` becomes ``4.5\\times 10^{33}`` (LaTeX would read 4.5 * e * 33);
    - spellings the LaTeX parser rejects are rewritten: ``1./3`` (bare trailing dot), ``E_{1}`` (E read as Euler's
      number), ``m_{\\max}`` / ``L_{\\odot}`` (commands in subscripts), ``np.arcsin(x)``;
    - ``\\text{..}`` / ``\\mathrm{..}`` inside an answer is unwrapped (math-verify's unit stripping would otherwise
      cut the answer at it); a trailing unit is left for math-verify to strip.

    Everything else (``\\dfrac``, ``\\frac43``, ``\\sqrt2``, units, ``^\\circ``, ``\\%``, thousands separators, ...)
    is left to math-verify's own LaTeX normalisation.
    """
    s = gold_text(answer)
    boxed = last_boxed_content(s)
    if boxed is not None:
        s = boxed
    s = s.replace("\r", " ").replace("\n", " ").replace("\t", " ")
    s = _DELIMITER_RE.sub(" ", s)
    s = _TRAILING_RE.sub("", s)
    s = _LEADING_RE.sub("", s)
    s = _SCI_RE.sub(lambda m: f"{m.group(1).rstrip('.')}\\times 10^{{{m.group(2)}}}", s)
    s = _BARE_DOT_RE.sub("", s)
    s = _PY_FUNC_RE.sub(r"\\\1", s)
    s = _SUBSCRIPT_RE.sub(_plain_subscript, s)
    s = _unwrap_inner_text(s)
    s = _E_SUBSCRIPT_RE.sub(r"\\mathcal{\1}", s)
    s = re.sub(r"\s+,", ",", s)  # "$1$, $2$" -> "1 , 2" above
    return re.sub(r"\s+", " ", s).strip()


def string_key(answer: str) -> str:
    """Exact-match key of a normalised answer, for golds math-verify cannot parse: spacing and \\dfrac ignored."""
    s = answer
    for junk in ("\\left", "\\right", "\\displaystyle", "\\!", "\\,", "\\;", "\\:", "\\ ", "~", " "):
        s = s.replace(junk, "")
    return s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
