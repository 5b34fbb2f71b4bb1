"""Task plugins: one module per dataset, each registering its tasks on import (explicit, no star imports)."""

import tasks.audiocaps  # noqa: F401
import tasks.msrvtt  # noqa: F401
import tasks.pretrain  # noqa: F401
import tasks.vatex  # noqa: F401
