"""`python3 -m agentctl`, the same as /usr/bin/agentctl."""

import sys

from agentctl.cli import main

sys.exit(main())
