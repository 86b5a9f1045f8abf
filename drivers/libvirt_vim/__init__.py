"""mecorch's VIM driver on libvirt + QEMU (entry point
`drivers.libvirt_vim:LibvirtVIM`). Modules: `driver` (the ComputeDriver),
`xmlrender` (pure XML renderers), `images` (VM image repository),
`storage` / `network` (pool, volumes, NAT network, lease wait), `accel`
(KVM-or-TCG probe), `checks` (`mecorch doctor`), `errors` (the one place
libvirt errors are translated)."""

from .driver import LibvirtVIM

__all__ = ["LibvirtVIM"]
