# SPDX-License-Identifier: BSD-2-Clause
"""AES-GCM: GHASH multipliers, the GCM core and its stream layouts."""

from .layouts import *       # noqa: F401,F403
from .profiles import GcmProfile, PROFILES, resolve_profile  # noqa: F401
