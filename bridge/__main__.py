"""``python -m bridge`` is ``twilio-bridge``."""

import sys

from bridge.cli import main

__all__: list[str] = []

sys.exit(main())
