"""The emulator's knobs (``EmulatorConfig``), counters (``EmulatorStats``) and shared state."""

from __future__ import annotations

import dataclasses
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from batchrun.emulator.model import ChatRequest
from batchrun.emulator.render import error_response
from batchrun.emulator.schedule import Schedule, allowed_between, parse_rpm_schedule, rpm_at

THOUGHTS_STYLES = ("field", "tag")
DROP_MODES = ("mixed", "reset", "truncate")
# How injected 429s (``fail_429``) state their wait: a sane Retry-After, none at all, an absurd
# one (10^9 s), an unparseable one, or any of these at random.
RETRY_AFTER_STYLES = ("seconds", "none", "absurd", "garbage", "mixed")
# Probabilities of the drawn faults, in the order they are drawn (cumulative).
FAULT_RATES = ("fail_503", "fail_500", "drop_rate", "fail_429", "fail_502", "not_json_rate",
               "no_usage_rate", "stall_rate", "early_eof_rate")


@dataclass
class EmulatorConfig:
    """Every knob; tests may change fields of a running server's config."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0  # uniform extra delay in [0, jitter_ms)
    rpm: float | None = None
    fail_503: float = 0.0
    fail_500: float = 0.0
    balance: float | None = None  # the live balance: billing decrements it
    spend_limit: float | None = None
    drop_rate: float = 0.0
    chars_per_token: float = 4.0
    seed: int = 0
    revoke_after: int | None = None
    deny_ip: bool = False
    models: tuple[str, ...] = ("gemini-3.1-pro",)
    thoughts_style: str = "field"
    credits_rounding: int | None = None
    # Additions beyond the agreed interface:
    rpm_burst: float | None = None  # bucket size; None = one second of flow (rpm/60, at least 1)
    drop_mode: str = "mixed"  # "reset": no byte sent; "truncate": cut mid-answer; "mixed": either
    chunk_delay_ms: float = 0.0  # pause between stream events (0: one write)
    max_body_mb: float = 100.0  # larger bodies -> 400 invalid_request
    # Faults beyond dropped connections (issue 7); each is one more slice of the same draw:
    fail_429: float = 0.0  # 429 rate_limit_exceeded whatever the rpm (not billed)
    retry_after: str = "seconds"  # what those 429s say: see RETRY_AFTER_STYLES
    fail_502: float = 0.0  # a proxy's HTML "502 Bad Gateway" page (not billed)
    not_json_rate: float = 0.0  # 200 whose body is an HTML page, not JSON (not billed)
    no_usage_rate: float = 0.0  # a complete answer without usage or credits (billed)
    stall_rate: float = 0.0  # the answer starts, then stalls for stall_s (billed)
    stall_s: float = 30.0
    early_eof_rate: float = 0.0  # the answer ends cleanly halfway: no usage, no [DONE] (billed)
    echo_key: bool = False  # error messages quote the caller's key, as careless gateways do
    rate_headers: bool = True  # send x-ratelimit-* with --rpm (False: a gateway that does not)
    # Real conditions (a shared gateway): a limit that changes during the run, "RPM@S,..."
    # from the start or the last reset; exclusive with ``rpm`` (see emulator_schedule).
    rpm_schedule: str | None = None
    stream_parts: int = 0  # >0: a streamed answer comes in N parts spread over the latency
    count_by_second: bool = False  # stats count chat requests per second of the clock
    # Keep every valid chat request's body (decoded) in stats.requests_seen, so a test can
    # check what each row asked for; off by default (bodies may be large).
    record_requests: bool = False
    # Answers cut short (finish_reason "length", half the content): a share of requests,
    # chosen by the request's messages (the same request is cut again), and every request
    # whose last user text contains ``length_match``.
    length_rate: float = 0.0
    length_match: str | None = None
    # A request asking for JSON of a schema gets JSON; this share of such answers is badly
    # formed (fences, thought text, a missing field, cut short), chosen by the request.
    bad_json_rate: float = 0.0
    # As OpenAI and vLLM do: a stream carries usage only when the request asked for it
    # (stream_options.include_usage); off, every stream carries it, as the gateway's does.
    strict_stream_usage: bool = False

    def __post_init__(self) -> None:
        self.models = tuple(self.models)
        self.validate()

    def validate(self) -> None:
        if self.thoughts_style not in THOUGHTS_STYLES:
            raise ValueError(f"thoughts_style must be one of {THOUGHTS_STYLES}")
        if self.drop_mode not in DROP_MODES:
            raise ValueError(f"drop_mode must be one of {DROP_MODES}")
        if self.retry_after not in RETRY_AFTER_STYLES:
            raise ValueError(f"retry_after must be one of {RETRY_AFTER_STYLES}")
        for name in FAULT_RATES:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1]")
        if sum(getattr(self, name) for name in FAULT_RATES) > 1.0 + 1e-9:
            raise ValueError(f"the fault rates ({', '.join(FAULT_RATES)}) add up to more than 1")
        for name in ("length_rate", "bad_json_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1]")
        if self.stall_s < 0:
            raise ValueError("stall_s must not be negative")
        if self.chars_per_token <= 0:
            raise ValueError("chars_per_token must be positive")
        if isinstance(self.stream_parts, bool) or not isinstance(self.stream_parts, int) \
                or self.stream_parts < 0:
            raise ValueError("stream_parts must be a whole number >= 0")
        if self.rpm_schedule is not None:
            parse_rpm_schedule(self.rpm_schedule)
            if self.rpm is not None:
                # Two limits at once would leave the caller guessing which one answered.
                raise ValueError("rpm and rpm_schedule are exclusive: set one, the other None")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["models"] = list(self.models)
        return data


@dataclass
class EmulatorStats:
    """Plain counters, written by the server's loop, readable from any thread."""

    requests_total: int = 0  # every POST /v1/chat/completions
    by_status: Counter[int] = field(default_factory=Counter)  # 0 = connection reset, no answer
    billed_requests: int = 0
    credits_billed: float = 0.0
    billed_by_body: Counter[str] = field(default_factory=Counter)  # sha256(raw body) -> times
    media_seen: list[tuple[str, int]] = field(default_factory=list)  # (mime, decoded bytes)
    models_requested: Counter[str] = field(default_factory=Counter)  # body's model -> times
    dropped: int = 0  # resets and truncated answers
    # Every fault served, by kind: the drawn ones ("503", "reset", "stall" …) and the
    # refusals of the key's state ("revoked", "no_credits", "spend_limit", "rpm").
    faults: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    # Chat requests by whole second of the state's clock (``count_by_second``): a bench sees
    # the send rate the emulator received, retries included.
    requests_by_second: Counter[int] = field(default_factory=Counter)
    requests_seen: list[dict[str, Any]] = field(default_factory=list)  # record_requests

    def reset(self) -> None:
        """Zero everything but the requests still in flight."""
        in_flight = self.in_flight
        fresh = EmulatorStats(in_flight=in_flight, max_in_flight=in_flight)
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(fresh, f.name))

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests_total": self.requests_total,
            "by_status": {str(status): n for status, n in dict(self.by_status).items()},
            "billed_requests": self.billed_requests,
            "credits_billed": round(self.credits_billed, 10),
            "billed_by_body": dict(self.billed_by_body),
            "media_seen": [list(item) for item in list(self.media_seen)],
            "models_requested": dict(self.models_requested),
            "dropped": self.dropped,
            "faults": dict(self.faults),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "requests_by_second": {str(s): n for s, n in sorted(self.requests_by_second.items())},
            "requests_seen": list(self.requests_seen),
        }


class EmulatorState:
    """What the handlers share: config, stats, the rate bucket and the fault RNG."""

    def __init__(self, config: EmulatorConfig, stats: EmulatorStats) -> None:
        self.config = config
        self.stats = stats
        self.reset()

    def reset(self) -> None:
        """A fresh key: full rate bucket, fault draws from the start of ``config.seed``'s sequence,
        the schedule's clock at 0."""
        self.bucket_tokens: float | None = None
        self.bucket_stamp = 0.0
        self.clock_origin = time.monotonic()
        self._schedule_text: str | None = None
        self._schedule: Schedule = ()
        self.reseed()

    def elapsed_s(self, now: float | None = None) -> float:
        """Seconds on the state's clock: since start or the last reset."""
        return (time.monotonic() if now is None else now) - self.clock_origin

    def schedule(self) -> Schedule:
        """The parsed ``rpm_schedule`` (empty without one), parsed again only when changed."""
        text = self.config.rpm_schedule
        if text != self._schedule_text:
            self._schedule = parse_rpm_schedule(text) if text is not None else ()
            self._schedule_text = text
        return self._schedule

    def current_rpm(self, now: float | None = None) -> float | None:
        """The limit in force now: the schedule's step, else ``rpm``, else None."""
        steps = self.schedule()
        if steps:
            return rpm_at(steps, self.elapsed_s(now))
        return self.config.rpm or None

    def _refill(self, now: float, rpm: float) -> float:
        """Tokens earned since the last take: the schedule's integral across a step."""
        steps = self.schedule()
        if steps:
            return allowed_between(steps, self.elapsed_s(self.bucket_stamp), self.elapsed_s(now))
        return (now - self.bucket_stamp) * rpm / 60.0

    def reseed(self) -> None:
        self.rng_seed = self.config.seed
        self.fault_rng = random.Random(self.rng_seed)
        self.jitter_rng = random.Random(self.rng_seed + 1)

    def rate_wait(self, now: float | None = None) -> float:
        """Take one request token; 0.0 if allowed, else seconds until one is available.

        The bucket follows the limit in force: its level is kept across a change of rate and
        clamped to the new capacity (one second of the new flow unless ``rpm_burst``)."""
        now = time.monotonic() if now is None else now
        rpm = self.current_rpm(now)
        if not rpm:
            return 0.0
        rate = rpm / 60.0
        capacity = max(1.0, self.config.rpm_burst or rate)
        if self.bucket_tokens is None:
            self.bucket_tokens = capacity
        else:
            self.bucket_tokens = min(capacity, self.bucket_tokens + self._refill(now, rpm))
        self.bucket_stamp = now
        if self.bucket_tokens >= 1.0:
            self.bucket_tokens -= 1.0
            return 0.0
        return (1.0 - self.bucket_tokens) / rate

    def draw_fault(self) -> str | None:
        """One seeded draw per valid request: "503", "500", "reset", "truncate", "429", "502",
        "not_json", "no_usage", "stall", "early_eof" or None."""
        config = self.config
        if config.seed != self.rng_seed:  # a test changed the seed at runtime
            self.reseed()
        rates = [getattr(config, name) for name in FAULT_RATES]
        if not any(rates):
            return None
        draw = self.fault_rng.random()
        bound = 0.0
        for name, rate in zip(FAULT_RATES, rates, strict=True):
            bound += rate
            if draw < bound:
                kind = _FAULT_KIND[name]
                if kind == "drop":
                    if config.drop_mode == "mixed":
                        kind = "reset" if self.fault_rng.random() < 0.5 else "truncate"
                    else:
                        kind = config.drop_mode
                self.stats.faults[kind] += 1
                return kind
        return None

    def retry_after_headers(self) -> dict[str, str]:
        """The headers of an injected 429, in the configured ``retry_after`` style."""
        style = self.config.retry_after
        if style == "mixed":
            style = self.fault_rng.choice(RETRY_AFTER_STYLES[:-1])
        if style == "seconds":
            return {"Retry-After": "1"}
        if style == "absurd":
            return {"Retry-After": "1000000000"}
        if style == "garbage":
            return {"Retry-After": "soon, maybe"}
        return {}

    def delay_s(self) -> float:
        config = self.config
        jitter = self.jitter_rng.random() * config.jitter_ms if config.jitter_ms else 0.0
        return (config.latency_ms + jitter) / 1000.0

    def access_error(self, request: web.BaseRequest, revoked: bool) -> web.Response | None:
        """401 for a missing, malformed, non-sk- or revoked key; 403 when IPs are denied."""
        header = request.headers.get("Authorization")
        if not header:
            return error_response(
                "invalid_api_key", "Missing API key: send 'Authorization: Bearer sk-...'."
            )
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return error_response(
                "invalid_api_key", "Malformed Authorization header: expected 'Bearer sk-...'."
            )
        if not key.startswith("sk-") or len(key) < 4:
            shown = f" {key!r}" if self.config.echo_key else ""
            return error_response("invalid_api_key",
                                  f"Invalid API key{shown}: keys start with 'sk-'.")
        if revoked:
            shown = f" ({key})" if self.config.echo_key else ""
            return error_response("invalid_api_key",
                                  f"API key{shown} has been disabled or deleted.")
        if self.config.deny_ip:
            return error_response(
                "ip_not_allowed", f"Request IP {request.remote} is not in the key's allowlist."
            )
        return None

    def bill(self, credits: float, body_sha: str, chat: ChatRequest) -> None:
        config, stats = self.config, self.stats
        if config.balance is not None:
            config.balance = round(config.balance - credits, 10)
        stats.billed_requests += 1
        stats.credits_billed += credits
        stats.billed_by_body[body_sha] += 1
        stats.media_seen.extend(chat.media)


_FAULT_KIND = {"fail_503": "503", "fail_500": "500", "drop_rate": "drop", "fail_429": "429",
               "fail_502": "502", "not_json_rate": "not_json", "no_usage_rate": "no_usage",
               "stall_rate": "stall", "early_eof_rate": "early_eof"}
_FLOAT = {"latency_ms", "jitter_ms", "chars_per_token", "chunk_delay_ms", "max_body_mb",
          "stall_s", "length_rate", "bad_json_rate", *FAULT_RATES}
_OPTIONAL_FLOAT = {"rpm", "rpm_burst", "balance", "spend_limit"}
_OPTIONAL_INT = {"revoke_after", "credits_rounding"}
_BOOL = {"deny_ip", "echo_key", "rate_headers", "count_by_second", "record_requests",
         "strict_stream_usage"}


def _coerce(name: str, value: Any) -> Any:
    def number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    if name in _FLOAT and number(value):
        return float(value)
    if name in _OPTIONAL_FLOAT and (value is None or number(value)):
        return None if value is None else float(value)
    if name in _OPTIONAL_INT and (value is None or (number(value) and int(value) == value)):
        return None if value is None else int(value)
    if name in ("seed", "stream_parts") and number(value) and int(value) == value:
        return int(value)
    if name in _BOOL and isinstance(value, bool):
        return value
    if name in ("rpm_schedule", "length_match") and (value is None or isinstance(value, str)):
        return value
    if name in ("thoughts_style", "drop_mode", "retry_after") and isinstance(value, str):
        return value
    if name == "models" and isinstance(value, list) and all(isinstance(m, str) for m in value):
        return tuple(value)
    raise ValueError(f"bad value for {name}: {value!r}")


def apply_config(config: EmulatorConfig, changes: dict[str, Any]) -> None:
    """Validate all of ``changes`` first, then set them on the live config."""
    names = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
    trial = dataclasses.replace(config, **{k: _coerce(k, v) for k, v in changes.items()})
    for name in changes:
        setattr(config, name, getattr(trial, name))
