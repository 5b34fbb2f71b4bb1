"""Task plugins: one module per dataset, each registering its tasks on import (explicit, no star imports)."""

import tasks.msrvtt  # noqa: F401
