"""What makes PublishVersion publish: the rule by which `$LATEST` differs from the newest published version.

AWS publishes a new version when anything of the configuration changed since the newest one was published —
every configuration field, Description included — and returns that newest version otherwise; identical code is no
change (the code's digest is compared, not when it was uploaded). Pure: `Registry.publish` asks it under its lock.
"""

from __future__ import annotations

import dataclasses

from gateway.store.records import FunctionConfig

#: fields that do not make two versions different (PublishVersion with nothing changed returns the latest). Every
#: configuration field counts, Description too (compared apart: `unchanged_since`), as AWS counts it; tags are the
#: function's, not a version's; identical code is no change (the digest is compared); states are not configuration
_NOT_COMPARED = frozenset({"version", "revision_id", "last_modified", "description", "tags", "code_dir", "layer_dirs",
                           "published_from_description", "state", "last_update"})  # fmt: skip


def unchanged_since(published: FunctionConfig, latest: FunctionConfig) -> bool:
    """Whether `$LATEST` is as it was when `published` was taken from it: its Description included (a version's own
    Description may be PublishVersion's, so the one `$LATEST` had then is compared)."""
    then = published.published_from_description
    fields = (f.name for f in dataclasses.fields(FunctionConfig) if f.name not in _NOT_COMPARED)
    same = all(getattr(published, f) == getattr(latest, f) for f in fields)
    return same and (published.description if then is None else then) == latest.description
