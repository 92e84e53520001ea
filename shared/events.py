"""What an event is, in every feature's words: the types, the limits on its ids and name.

Ingest checks events against these, query filters by them, the tracking plan names events
within the same limits, and the OpenAPI models of all three are built from them, so a limit
changed here changes every check and every document at once.
"""

from __future__ import annotations

from typing import Literal, get_args

# Segment's six calls; the `type` of every stored event.
EventType = Literal["track", "identify", "page", "screen", "group", "alias"]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)

# messageId: the client's dedup key, part of the primary key.
MAX_MESSAGE_ID = 200
# A track event's name (non-track events count under "$" + type), and a tracking-plan schema's.
MAX_EVENT_NAME = 200
# userId and anonymousId, as stored (a number is stored as its decimal string).
MAX_USER_ID = 255
