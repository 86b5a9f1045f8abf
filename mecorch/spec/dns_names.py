"""Which DNS names an app instance may hold on a host: the grant of its
package and the host's domains. Pure: the claims ledger
(`mecorch.mepm.claims`) reads the host's MEP section and the instance's
package and asks here.

A DNS rule of an instance may name (checked at instantiation and on every
Mp1 PUT, on the rule set the host would hold):
(a) a name below the host's MEC domain (`mep.dns_domain`, `mec.local` by
    default); the bare domain itself is the host's, no app's;
(b) a name the instance's own package grants: every `domainName` of its
    AppD's `appDNSRule` (`granted`), recorded on the package when the
    operator onboards it (`dnsNames`); this is how an app answers a public
    name (`video.example.com`) with its edge instance for the site's UEs;
(c) a name below one of the host's extra allowed domains
    (`mep.dns_allowed_domains`, the operator's, none by default).
Anything else is refused, naming the name, the domains allowed and the
package. Ownership between apps is another rule (`rules.claim_conflict`:
a name another app's instance holds is a 409), checked first: a grant says
an app may hold a name, never that it may take it from another.

A host whose MEP sets no `dns_domain` (null) checks no names at all, as
before.
"""

from __future__ import annotations

from typing import Iterable

from mecorch.spec.rules import below_domain

__all__ = ["declared", "granted", "normal", "refusal"]


def normal(domain: str) -> str:
    """A domain as rules store names: lower-case, no trailing dot."""
    return domain.lower().rstrip(".")


def declared(appd: dict) -> list[str]:
    """The names an AppD's appDNSRule declares (domainName of each, as the
    rules store them), sorted, each once. The AppD is a validated one
    (`mecorch.package.appd`): every domainName is a host name."""
    rules = appd.get("appDNSRule") or []
    return sorted({normal(r["domainName"]) for r in rules
                   if isinstance(r, dict) and isinstance(r.get("domainName"), str)})


def granted(pkg: dict | None) -> list[str]:
    """The names a package record grants its instances: those recorded at
    onboarding (`dnsNames`), or, for a record onboarded before they were
    recorded, those its stored AppD declares."""
    if not pkg:
        return []
    if isinstance(pkg.get("dnsNames"), list):
        return list(pkg["dnsNames"])
    return declared(pkg.get("_appd") or {})


def refusal(rule_id: str, name: str, host_id: str, domain: str | None,
            allowed: Iterable[str] = (), grant: Iterable[str] = (),
            package: str | None = None) -> str | None:
    """Why DNS rule `rule_id` may not name `name` (normalised) on host
    `host_id`, or None when it may: below the MEC `domain`, granted by the
    instance's package (`grant`, the package id `package`), or below one of
    the host's `allowed` domains. `domain` None: the host checks no name."""
    if domain is None:
        return None
    domain = normal(domain)
    allowed = [normal(d) for d in allowed]
    if name == domain:      # before the grant: a package names no host's domain
        return (f"dnsRule {rule_id}: domainName {name} is the MEC domain of host {host_id} "
                f"itself, which no app may claim (a name below it may be, e.g. app.{name})")
    grant = list(grant)
    if name in grant or below_domain(name, domain) or any(below_domain(name, d) for d in allowed):
        return None
    by = (f"and its app package {package} does not declare it (the package's AppD "
          f"appDNSRule declares {', '.join(grant) or 'no name'})" if package
          else "and the instance has no app package to grant it")
    return (f"dnsRule {rule_id}: domainName {name} is not in the MEC domain {domain} of "
            f"host {host_id} (mep.dns_domain) nor in its allowed domains "
            f"({', '.join(allowed) or 'none'}: mep.dns_allowed_domains), {by}")
