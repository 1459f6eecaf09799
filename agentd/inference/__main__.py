"""``python3 -m agentd.inference``: the agentd-inference service (see service.py)."""

import sys

from agentd.inference.service import main

sys.exit(main())
