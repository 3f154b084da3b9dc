"""Runtime settings: the few knobs an admin may turn while the hub runs.

Most settings shape how the hub is built (database, ports, keys) and only change with a
restart. A short list can change live — log level, how often loops tick, alert rate
limits. Each is validated with the same rules as in ``config.py`` (the ``Settings``
field's type and bounds), applied at once through a setter the hub registers, stored in
the database so it survives a restart, and published as ``settings.changed`` (the audit
log records it). Changing them needs a step-up confirmation (services/policy.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import TypeAdapter, ValidationError

from zhongshu import errors
from zhongshu.config import Settings
from zhongshu.db.settings_store import SettingsStore
from zhongshu.services.events import Event, EventBus
from zhongshu.services.identity import Principal

Row = dict[str, Any]
# Shown as *** in the effective configuration.
SECRET_FIELDS = frozenset(
    {"secret_key", "callback_secret", "relay_api_keys", "encryption_keys", "database_url"}
)


@dataclass(frozen=True, slots=True)
class Tunable:
    name: str
    apply: Callable[[Any], None]
    adapter: TypeAdapter[Any]


class RuntimeSettings:
    def __init__(self, store: SettingsStore, bus: EventBus, settings: Settings) -> None:
        self.store = store
        self.bus = bus
        self.settings = settings
        self._tunables: dict[str, Tunable] = {}
        self._current: dict[str, Any] = {}

    def tunable(self, name: str, apply: Callable[[Any], None]) -> None:
        """Make ``name`` (a ``Settings`` field) changeable live; ``apply`` sets it."""
        field = Settings.model_fields[name]
        # The field's own type and bounds (gt=0 …), so the rules stay in config.py.
        form: Any = (
            Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
        )
        adapter: TypeAdapter[Any] = TypeAdapter(form)
        self._tunables[name] = Tunable(name, apply, adapter)
        self._current[name] = getattr(self.settings, name)

    @property
    def names(self) -> list[str]:
        return sorted(self._tunables)

    async def load(self) -> None:
        """Apply what was stored (at start); values no longer valid are skipped."""
        for row in await self.store.all():
            tunable = self._tunables.get(row["key"])
            if tunable is None:
                continue
            try:
                value = tunable.adapter.validate_python((row["value"] or {}).get("v"))
            except ValidationError:
                continue
            tunable.apply(value)
            self._current[row["key"]] = value

    async def view(self) -> Row:
        stored = {r["key"]: r for r in await self.store.all()}
        effective = {
            k: ("***" if k in SECRET_FIELDS and v else v)
            for k, v in self.settings.model_dump(mode="json").items()
        }
        effective.update(self._current)
        return {
            "effective": effective,
            "runtime": {
                name: {
                    "value": self._current[name],
                    "default": getattr(self.settings, name),
                    "changed_at": stored[name]["updated_at"] if name in stored else None,
                    "changed_by": stored[name]["updated_by"] if name in stored else None,
                }
                for name in self.names
            },
        }

    async def update(self, changes: Row, actor: Principal) -> Row:
        """Validate every change first (all or nothing), store, then apply."""
        if not changes:
            raise errors.InvalidInput("send at least one setting to change")
        unknown = sorted(set(changes) - set(self._tunables))
        if unknown:
            raise errors.InvalidInput(
                f"{', '.join(unknown)}: not changeable while the hub runs "
                f"(changeable: {', '.join(self.names)}; the rest need config.yaml and a restart)"
            )
        values: Row = {}
        for name, raw in changes.items():
            try:
                values[name] = self._tunables[name].adapter.validate_python(raw)
            except ValidationError as exc:
                reason = exc.errors()[0]["msg"]
                raise errors.InvalidInput(f"{name}: {reason}") from exc
        now = time.time()
        before = {k: self._current[k] for k in values}
        ev = Event(
            "settings.changed",
            "settings",
            "runtime",
            actor.actor,
            {"changes": {k: {"from": before[k], "to": v} for k, v in values.items()}},
            now,
        )
        await self.store.put(values, actor.actor, now, ev)
        for name, value in values.items():
            self._tunables[name].apply(value)
            self._current[name] = value
        self.bus.publish([ev])
        return await self.view()
