# dsu: build and install the kernel module and the userspace tools.
#
#   make modules                   build kmod/dsu.ko against KDIR (your running kernel's build tree)
#   sudo make modules_install      install it under /lib/modules/KVER/INSTALL_MOD_DIR, run depmod
#   make userspace                 build dsuctl (release) with its man pages and completions, and libdsu
#   sudo make install              install dsuctl, its man pages and completions, and libdsu under PREFIX
#   sudo make install-dkms         copy the module's sources to /usr/src/dsu-VERSION for dkms
#
# Variables: KVER, KDIR, RUSTC and BINDGEN (the very rustc and bindgen that built the
# kernel; `make modules` checks their versions against the kernel's config), PREFIX
# (/usr/local), DESTDIR (staging root), INSTALL_MOD_PATH and INSTALL_MOD_DIR (extra).
# The kernel's kbuild reads ./Kbuild, not this file, when it builds the module (M=).

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' $(CURDIR)/Cargo.toml | head -n1)

KVER ?= $(shell uname -r)
KDIR ?= /lib/modules/$(KVER)/build
RUSTC ?= rustc
BINDGEN ?= bindgen
INSTALL_MOD_DIR ?= extra
KBUILD = $(MAKE) -C $(KDIR) M=$(CURDIR) LLVM=1 RUSTC=$(RUSTC) BINDGEN=$(BINDGEN)

CARGO ?= cargo
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
BASHCOMPDIR ?= $(DATADIR)/bash-completion/completions
ZSHCOMPDIR ?= $(DATADIR)/zsh/site-functions
FISHCOMPDIR ?= $(DATADIR)/fish/vendor_completions.d
DKMSDIR ?= /usr/src/dsu-$(VERSION)
INSTALL ?= install

RELEASE ?= $(CURDIR)/target/release
GEN ?= $(CURDIR)/target/generated

.PHONY: all modules modules_install check-kernel-toolchain clean-modules userspace generated \
	install install-bin install-man install-completions install-lib install-dkms \
	uninstall clean

all: userspace modules

# ---- kernel module ---------------------------------------------------------------------

# A Rust module must be built by the rustc (and bindgen) that built the kernel: their
# versions are recorded in the kernel's config (CONFIG_RUSTC_VERSION_TEXT, 6.12 on).
check-kernel-toolchain:
	@test -f $(KDIR)/include/config/auto.conf || { \
	  echo "error: $(KDIR) is not a configured kernel build tree (set KDIR or KVER)" >&2; exit 1; }
	@grep -qx 'CONFIG_RUST=y' $(KDIR)/include/config/auto.conf || { \
	  echo "error: the kernel in $(KDIR) is built without CONFIG_RUST: dsu.ko cannot be built for it" >&2; exit 1; }
	@want=$$(sed -n 's/^CONFIG_RUSTC_VERSION_TEXT=//p' $(KDIR)/include/config/auto.conf | tr -d '"'); \
	have=$$($(RUSTC) --version 2>/dev/null); \
	if [ -n "$$want" ] && [ "$$want" != "$$have" ]; then \
	  echo "error: the kernel was built with '$$want' but RUSTC=$(RUSTC) is '$$have': pass RUSTC=<that rustc>" >&2; exit 1; fi; \
	want=$$(sed -n 's/^CONFIG_BINDGEN_VERSION_TEXT=//p' $(KDIR)/include/config/auto.conf | tr -d '"'); \
	have=$$($(BINDGEN) --version 2>/dev/null); \
	if [ -n "$$want" ] && [ "$$want" != "$$have" ]; then \
	  echo "error: the kernel was built with '$$want' but BINDGEN=$(BINDGEN) is '$$have': pass BINDGEN=<that bindgen>" >&2; exit 1; fi

modules: check-kernel-toolchain
	$(KBUILD) modules

modules_install:
	$(KBUILD) INSTALL_MOD_DIR=$(INSTALL_MOD_DIR) modules_install

clean-modules:
	-$(KBUILD) clean

# The module's sources as dkms copies them into its build tree; dkms.conf says how to build.
DKMS_FILES := Makefile Kbuild dkms.conf kmod uapi/dsu.h uapi/src/bindings.rs LICENSES
install-dkms:
	$(INSTALL) -d $(DESTDIR)$(DKMSDIR)
	cd $(CURDIR) && tar -c --exclude='*.o' --exclude='*.ko' --exclude='*.cmd' \
	  --exclude='*.mod*' --exclude='*.rmeta' --exclude='.*.d' --exclude='*.order' \
	  --exclude='*.symvers' $(DKMS_FILES) | tar -x -C $(DESTDIR)$(DKMSDIR)

# ---- userspace -------------------------------------------------------------------------

userspace:
	$(CARGO) build --release --locked -p dsuctl
	$(MAKE) generated
	$(LIBDSU) all

# Man pages (clap_mangen) and completions (clap_complete), written by the built dsuctl.
generated:
	rm -rf $(GEN) && mkdir -p $(GEN)/man
	$(RELEASE)/dsuctl generate man $(GEN)/man
	$(RELEASE)/dsuctl generate completions bash >$(GEN)/dsuctl.bash
	$(RELEASE)/dsuctl generate completions zsh >$(GEN)/_dsuctl
	$(RELEASE)/dsuctl generate completions fish >$(GEN)/dsuctl.fish

install: install-bin install-man install-completions install-lib

install-bin:
	$(INSTALL) -d $(DESTDIR)$(BINDIR)
	$(INSTALL) -m 0755 $(RELEASE)/dsuctl $(DESTDIR)$(BINDIR)/dsuctl

install-man:
	$(INSTALL) -d $(DESTDIR)$(MANDIR)/man1
	$(INSTALL) -m 0644 $(GEN)/man/*.1 $(DESTDIR)$(MANDIR)/man1/

install-completions:
	$(INSTALL) -d $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	$(INSTALL) -m 0644 $(GEN)/dsuctl.bash $(DESTDIR)$(BASHCOMPDIR)/dsuctl
	$(INSTALL) -m 0644 $(GEN)/_dsuctl $(DESTDIR)$(ZSHCOMPDIR)/_dsuctl
	$(INSTALL) -m 0644 $(GEN)/dsuctl.fish $(DESTDIR)$(FISHCOMPDIR)/dsuctl.fish

# libdsu (the C library): libdsu.h under INCLUDEDIR, libdsu.so.0 and libdsu.a under LIBDIR,
# dsu.pc under LIBDIR/pkgconfig; its own Makefile has the rules.
LIBDSU = $(MAKE) -C $(CURDIR)/userspace/libdsu PREFIX=$(PREFIX) LIBDIR=$(LIBDIR) \
	INCLUDEDIR=$(INCLUDEDIR) DESTDIR=$(DESTDIR)
install-lib:
	$(LIBDSU) install

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/dsuctl $(DESTDIR)$(MANDIR)/man1/dsuctl*.1 \
	  $(DESTDIR)$(BASHCOMPDIR)/dsuctl $(DESTDIR)$(ZSHCOMPDIR)/_dsuctl \
	  $(DESTDIR)$(FISHCOMPDIR)/dsuctl.fish
	$(LIBDSU) uninstall

clean: clean-modules
	$(CARGO) clean
