"""Compile grammar specs to xgrammar grammars for one tokenizer, with an LRU cache keyed by canonical spec.

Why xgrammar: the constraint must hold by construction. xgrammar enforces numeric bounds, enums, required fields,
``maxLength``/``maxItems``, string ``pattern`` and plain regexes (tests/runtime/guidance check each); outlines-core,
whose masks were cheaper, does not enforce integer ``minimum``/``maximum``, so a random model never finished;
llguidance's masks cost several times xgrammar's on the tiny model's byte-level vocabulary. xgrammar's structural
tags express tool calling ("free text, or tool calls after a trigger") directly; it ships a CPU kernel to apply
the packed bitmask; and it was already a pinned dependency, so nothing extra is installed.
``python bench/guidance.py`` measures what it costs here: compile time cold and cached, the mask work per step.

Choices that keep random and real models finishing:

* JSON is generated in one canonical layout, ``{"a": 1, "b": [1, 2]}`` (``any_whitespace=False``: separators
  ``", "`` and ``": "``, no other whitespace). A model cannot loop on whitespace (a known failure mode of
  free-whitespace JSON grammars; with it the random model wrote tab after tab), and the layout is the one
  models are trained on.
* Strict mode: properties a schema does not list are not generated (output still validates against the schema,
  and objects close).
* No raw control characters in strings. xgrammar's rule for a length-bounded string (``minLength``/``maxLength``)
  admits U+0000-U+001F, which RFC 8259 forbids unescaped; a random model wrote ``\x1d`` into a tool call's
  arguments and ``json.loads`` refused them. Every JSON grammar goes through :func:`_json_ebnf`, which gives
  that rule the character class of xgrammar's own unbounded string rule.

Bad input is reported before any generation: the schema is first checked against its JSON Schema metaschema
(``jsonschema``, messages name the offending keyword), then compiled; an xgrammar error (unsupported keyword,
impossible bounds, unparsable regex) becomes :class:`InvalidGrammarError` with the engine's message, and so does a
grammar that generation could enter but never finish (a ``$ref`` cycle with no way out, a regex that matches
nothing: :mod:`runtime.guidance.deadends`).
"""

from __future__ import annotations

import functools
import json
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jsonschema
import xgrammar as xgr

from runtime.guidance.xgrammar_constraint import GrammarConstraintFactory
from runtime.guidance.deadends import dead_rules
from runtime.guidance.errors import InvalidGrammarError
from runtime.guidance.specs import GrammarSpec, canonical_schema

# Canonical JSON layout (see the module docstring).
ANY_WHITESPACE = False

# The one character of a length-bounded JSON string as xgrammar 0.2.8 writes it, and what RFC 8259 allows there.
_BOUNDED_STRING_CHAR = r'[^\"\\\r\n]'
_JSON_STRING_CHAR = r'[^\0-\x1f\"\\]'

_CPP_PREFIX = re.compile(r"^\[[0-9:]+\]\s+\S+:\d+:\s*")


def engine_message(exc: BaseException) -> str:
    """xgrammar's C++ errors start with a timestamp and a source location; keep only the message."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return _CPP_PREFIX.sub("", text)


def schema_ebnf(schema: Any, *, param: str) -> str:
    """A JSON Schema as an EBNF grammar in the canonical layout (for embedding in structural tags)."""
    check_schema(schema, param=param)
    try:
        return _ebnf(canonical_schema(schema))
    except (RuntimeError, ValueError, TypeError) as exc:
        raise InvalidGrammarError(f"invalid schema: {engine_message(exc)}", param=param) from exc


@functools.lru_cache(maxsize=512)
def _check_canonical(schema_json: str) -> None:
    # Memoised (valid schemas only: a raise is not cached): the metaschema check costs more than a cached compile.
    schema = json.loads(schema_json)
    jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator).check_schema(schema)


@functools.lru_cache(maxsize=512)
def _ebnf(schema_json: str) -> str:
    # Memoised: the tools of a conversation are resent with every turn.
    return _json_ebnf(schema_json, strict=True)


def _json_ebnf(schema_json: str, *, strict: bool) -> str:
    """xgrammar's grammar for a schema, with raw control characters kept out of every string (module docstring)."""
    grammar = xgr.Grammar.from_json_schema(schema_json, any_whitespace=ANY_WHITESPACE, strict_mode=strict)
    refuse_dead_ends(grammar, what="no finite JSON value matches the schema")
    return str(grammar).replace(_BOUNDED_STRING_CHAR, _JSON_STRING_CHAR)


def refuse_dead_ends(grammar: xgr.Grammar, *, what: str) -> None:
    """Raise ``ValueError`` (the callers' "invalid schema/regex" path) for rules generation could never finish."""
    dead = dead_rules(grammar)
    if dead:
        names = ", ".join(f"`{name}`" for name in dead[:5])
        raise ValueError(
            f"{what}: rule(s) {names} can be entered but never finished (a `$ref` cycle with no optional way out, "
            "or a character class that matches nothing)"
        )


def check_schema(schema: Any, *, param: str) -> None:
    """Reject a schema that is not valid against its own metaschema, naming the bad keyword."""
    if isinstance(schema, bool):
        return
    try:
        _check_canonical(json.dumps(schema, sort_keys=True))
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise InvalidGrammarError(f"invalid JSON Schema at {where}: {exc.message}", param=param) from exc


@dataclass
class CompileStats:
    """Cache hits and misses and the time spent compiling, for the tests and whoever profiles a replica."""

    hits: int = 0
    misses: int = 0
    compile_seconds: float = 0.0


class GrammarCompiler:
    """Compiles :class:`GrammarSpec` for one tokenizer; thread-safe; LRU-caches compiled grammars."""

    def __init__(
        self,
        tokenizer: Any,
        *,
        vocab_size: int | None = None,
        stop_token_ids: list[int] | None = None,
        cache_size: int = 256,
        max_threads: int = 1,
    ) -> None:
        kwargs: dict[str, Any] = {}
        if vocab_size is not None:
            kwargs["vocab_size"] = int(vocab_size)
        if stop_token_ids:
            kwargs["stop_token_ids"] = [int(t) for t in stop_token_ids]
        self.tokenizer_info = xgr.TokenizerInfo.from_huggingface(tokenizer, **kwargs)
        self.vocab_size = self.tokenizer_info.vocab_size
        # Our own LRU replaces xgrammar's cache so the key is the canonical spec and the size is bounded.
        self._compiler = xgr.GrammarCompiler(self.tokenizer_info, max_threads=max_threads, cache_enabled=False)
        self._cache: OrderedDict[str, xgr.CompiledGrammar] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._compile_lock = threading.Lock()
        self.stats = CompileStats()

    def __len__(self) -> int:
        return len(self._cache)

    def cached(self, spec: GrammarSpec) -> bool:
        with self._lock:
            return spec.key in self._cache

    def compile(self, spec: GrammarSpec, *, param: str = "grammar") -> xgr.CompiledGrammar:
        """The compiled grammar for ``spec``, from the cache when seen before. Raises InvalidGrammarError."""
        key = spec.key
        with self._lock:
            found = self._cache.get(key)
            if found is not None:
                self._cache.move_to_end(key)
                self.stats.hits += 1
                return found
        with self._compile_lock:  # one compile at a time; a concurrent twin finds the first one's result
            with self._lock:
                found = self._cache.get(key)
                if found is not None:
                    self._cache.move_to_end(key)
                    self.stats.hits += 1
                    return found
            start = time.perf_counter()
            compiled = self._compile_uncached(spec, param=param)
            elapsed = time.perf_counter() - start
        with self._lock:
            self._cache[key] = compiled
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            self.stats.misses += 1
            self.stats.compile_seconds += elapsed
        return compiled

    def factory(self, spec: GrammarSpec, *, param: str = "grammar") -> GrammarConstraintFactory:
        """Compile (or fetch) ``spec`` and return the per-sequence constraint factory for the engine."""
        return GrammarConstraintFactory(self.compile(spec, param=param), spec.key)

    def _compile_uncached(self, spec: GrammarSpec, *, param: str) -> xgr.CompiledGrammar:
        try:
            if spec.kind == "json_schema":
                schema = spec.schema()
                check_schema(schema, param=param)
                return self._compiler.compile_grammar(_json_ebnf(spec.value, strict=True))
            if spec.kind == "json_object":
                return self._compiler.compile_grammar(_json_ebnf(spec.value, strict=False))
            if spec.kind == "regex":
                grammar = xgr.Grammar.from_regex(spec.value)
                refuse_dead_ends(grammar, what="no finite string matches the regex")
                return self._compiler.compile_grammar(grammar)
            if spec.kind == "tool_calls":
                return self._compiler.compile_structural_tag(spec.value)
        except InvalidGrammarError:
            raise
        except (RuntimeError, ValueError, TypeError) as exc:
            what = {"regex": "invalid regex", "tool_calls": "invalid tool parameters"}.get(spec.kind, "invalid schema")
            raise InvalidGrammarError(f"{what}: {engine_message(exc)}", param=param) from exc
        raise InvalidGrammarError(f"unknown grammar kind {spec.kind!r}", param=param)
