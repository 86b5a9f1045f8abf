"""mecorch's VIM driver on OpenStack through openstacksdk (entry point
`drivers.openstack_vim:OpenStackVIM`). Modules: `driver` (the
ComputeDriver), `settings` (the config section: its schema, imported
alone by the core, and its reading), `images` (Glance as the VM
image repository), `flavors` (a flavor that fits a request), `checks`
(`mecorch doctor`), `errors` (the one place openstacksdk's and
keystoneauth's exceptions become mecorch errors)."""

from mecorch.driverapi.contracts import on_demand

__all__ = ["OpenStackVIM"]
__getattr__ = on_demand(__name__, "OpenStackVIM")     # the class and its backend library: when asked
