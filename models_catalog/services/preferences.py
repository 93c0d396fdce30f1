"""Per-user display settings (UserPreferences): read with defaults, written by the Settings page."""
from __future__ import annotations

from models_catalog.models import UserPreferences

# Civitai's nsfwLevel values, as the Settings page offers them.
NSFW_LEVELS = ((0, "blur every image"), (1, "PG (Civitai's safe level)"), (2, "PG-13"), (4, "R"), (8, "X"),
               (16, "XXX"), (32, "show everything unblurred"))


def nsfw_max_level_for(user) -> int:
    row = UserPreferences.objects.filter(user=user).only("nsfw_max_level").first()
    return row.nsfw_max_level if row else UserPreferences.DEFAULT_NSFW_MAX_LEVEL


def nsfw_max_level_set(*, user, level: int) -> int:
    if level not in {value for value, _ in NSFW_LEVELS}:
        raise ValueError(f"not a Civitai NSFW level: {level}")
    UserPreferences.objects.update_or_create(user=user, defaults={"nsfw_max_level": level})
    return level
