"""mecorch's VIM driver on OpenStack through openstacksdk (entry point
`drivers.openstack_vim:OpenStackVIM`). Modules: `driver` (the
ComputeDriver), `settings` (the config section), `images` (Glance as the VM
image repository), `flavors` (a flavor that fits a request), `checks`
(`mecorch doctor`), `errors` (the one place openstacksdk's and
keystoneauth's exceptions become mecorch errors)."""

from .driver import OpenStackVIM

__all__ = ["OpenStackVIM"]
