"""mecorch's VIM driver on libvirt + QEMU (entry point
`drivers.libvirt_vim:LibvirtVIM`). Modules: `driver` (the ComputeDriver),
`xmlrender` (pure XML renderers), `images` (VM image repository),
`storage` / `network` (pool, volumes, NAT network, lease wait), `accel`
(KVM-or-TCG probe), `checks` (`mecorch doctor`), `errors` (the one place
libvirt errors are translated), `settings` (the config section: its schema,
imported alone by the core, and its reading)."""

from mecorch.driverapi.contracts import on_demand

__all__ = ["LibvirtVIM"]
__getattr__ = on_demand(__name__, "LibvirtVIM")     # the class and its backend library: when asked
