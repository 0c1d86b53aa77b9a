"""The coordination engine: workflows that act on subscription events, exactly once in effect.

    durations.py    ISO 8601 durations (PT2S) for the definitions
    definitions.py  the definitions file a deployment edits: per-organization durations, targets
    timers.py       durable timers in MongoDB: scheduled by key, leased, fired once in effect
    effects.py      how a workflow writes: conditional create on an identifier from its trigger
    engine.py       the Workflow protocol and the engine that subscribes and runs them
"""

from workflows.effects import EFFECT_SYSTEM, Effects
from workflows.engine import Engine, Event, Workflow
from workflows.timers import Timer, Timers

__all__ = ["EFFECT_SYSTEM", "Effects", "Engine", "Event", "Timer", "Timers", "Workflow"]
