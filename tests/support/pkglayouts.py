"""Package layouts written in the tests from their published descriptions
(no third-party package file is copied into the tree), and a real
`mecorch serve` lab to onboard and deploy them.

- SOL004 CSAR (ETSI GS NFV-SOL 004 / MEC 037 clause 6): TOSCA-Metadata/
  TOSCA.meta with Entry-Definitions, and from SOL004 2.6 on
  ETSI-Entry-Manifest; before it the manifest is the root .mf named like
  the entry definitions. The AppD is a MEC 010-2 YAML AppD or a MEC 037
  TOSCA AppD (a node derived from tosca.nodes.mec.MecApp whose type carries
  descriptor_id & co as defaults, a Vdu.Compute or Vdu.OsContainer with a
  tosca.artifacts.nfv.SwImage artifact).
- EdgeGallery-style CSAR (EdgeGallery's app package and APPD definition
  documents): TOSCA.meta without ETSI-Entry-Manifest, whose
  Entry-Definitions names APPD/<app>.zip, further Name/Content-Type blocks;
  a root <app>.mf that lists every file but TOSCA.meta, with metadata
  app_product_name, app_provider_id, app_package_version,
  app_release_data_time, app_type; APPD/<app>.zip holding TOSCA_VNFD.meta,
  Definition/MainServiceTemplate.yaml (tosca.nodes.nfv.VNF, Vdu.Compute with
  sw_image_data.name, VduCp, VnfVirtualLink, tosca.nodes.nfv.app.configuration
  with appTrafficRule / appDNSRule) and Definition/nfv_vnfd_types_v1_0.yaml;
  Image/SwImageDesc.json (a JSON list: id, name, version, checksum,
  containerFormat, diskFormat, minDisk, minRam, swImage, ...) and the
  image zipped as Image/<app>.zip/<app>/<file>.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import zipfile
from contextlib import contextmanager
from pathlib import Path

import yaml

from conftest import run
from support import lab as thelab

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
META = "TOSCA-Metadata/TOSCA.meta"
PKGS = "/app_pkgm/v1/app_packages"
INST = "/app_lcm/v1/app_instances"


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data):
        return True


def dump(doc) -> bytes:
    """YAML of `doc` without anchors (a TOSCA AppD may not use them), even
    where the test shares one object between two places."""
    return yaml.dump(doc, Dumper=_NoAliases, sort_keys=False).encode()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def zip_bytes(entries: dict[str, bytes], deflate: bool = False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def write_zip(path: Path, entries: dict[str, bytes], deflate: bool = False) -> Path:
    path.write_bytes(zip_bytes(entries, deflate))
    return path


def manifest(files: dict[str, bytes], metadata: dict[str, str], skip=()) -> bytes:
    lines = ["metadata:"] + [f"{k}: {v}" for k, v in metadata.items()]
    for name in sorted(files):
        if name not in skip:
            lines += ["", f"Source: {name}", "Algorithm: SHA-256", f"Hash: {sha(files[name])}"]
    return ("\n".join(lines) + "\n").encode()


def tosca_meta(entry: str, entry_manifest: str | None = None, created_by: str = "tests",
               extra_blocks: str = "") -> bytes:
    text = ("TOSCA-Meta-File-Version: 1.0\nCSAR-Version: 1.1\n"
            f"Created-By: {created_by}\nEntry-Definitions: {entry}\n")
    if entry_manifest:
        text += f"ETSI-Entry-Manifest: {entry_manifest}\n"
    return (text + extra_blocks).encode()


# -- AppDs -----------------------------------------------------------------------

def rules(app: str, vip: str, snake: bool) -> tuple[list, list]:
    """A DNS rule naming the VIP and a traffic rule steering VIP:80 to the
    instance, in MEC 010-2 camelCase or MEC 037 snake_case."""
    if snake:
        dns = [{"dns_rule_id": f"{app}-dns", "domain_name": f"{app}.mec.local",
                "ip_address_type": "IP_V4", "ip_address": vip, "ttl": 60}]
        traffic = [{"traffic_rule_id": f"{app}-vip", "filter_type": "FLOW", "priority": 1,
                    "traffic_filter": [{"dst_address": [vip], "dst_port": ["80"],
                                        "protocol": ["TCP"]}],
                    "action": "FORWARD_DECAPSULATED",
                    "dst_interface": [{"interface_type": "IP"}]}]
    else:
        dns = [{"dnsRuleId": f"{app}-dns", "domainName": f"{app}.mec.local",
                "ipAddressType": "IP_V4", "ipAddress": vip, "ttl": 60}]
        traffic = [{"trafficRuleId": f"{app}-vip", "filterType": "FLOW", "priority": 1,
                    "trafficFilter": [{"dstAddress": [vip], "dstPort": ["80"],
                                       "protocol": ["TCP"]}],
                    "action": "FORWARD_DECAPSULATED",
                    # EdgeGallery writes dstInterface as one mapping
                    "dstInterface": {"interfaceType": "IP"}}]
    return dns, traffic


def mec_appd(kind: str, app: str, image_member: str, vip: str | None,
             version: str = "1.0") -> bytes:
    """A MEC 010-2 AppD (the samples') for `app`; no rules without `vip`."""
    src = "sample-container-app" if kind == "container" else "sample-vm-app"
    appd = yaml.safe_load((EXAMPLES / src / "Definitions/appd.yaml").read_text())
    appd["appDId"] = appd["appName"] = app
    appd["appDVersion"] = appd["appSoftVersion"] = version
    appd["swImageDescriptor"]["swImage"] = image_member
    appd.pop("appDNSRule", None)
    appd.pop("appTrafficRule", None)
    if vip:
        dns, traffic = rules(app, vip, snake=False)
        traffic[0]["dstInterface"] = [traffic[0]["dstInterface"]]
        appd["appDNSRule"], appd["appTrafficRule"] = dns, traffic
    return yaml.safe_dump(appd, sort_keys=False).encode()


def mec037_appd(kind: str, app: str, image_file: str, image_sha: str, vip: str,
                version: str = "1.0") -> bytes:
    """A MEC 037 TOSCA AppD; `image_file` relative to the template."""
    dns, traffic = rules(app, vip, snake=True)
    node_type = f"Tests.{app}_{version}"
    defaults = {"descriptor_id": app, "provider": "tests", "product_name": app,
                "software_version": version, "descriptor_version": version,
                "vnfm_info": ["etsivnfm:v2.3.1"]}
    doc = {
        "tosca_definitions_version": "tosca_simple_yaml_1_3",
        "description": f"{app}: MEC 037 AppD written by the tests",
        "imports": ["https://forge.etsi.org/rep/mec/gs037-pkg-format/raw/v3.2.1/MecAppDTypes.yaml"],
        "node_types": {node_type: {
            "derived_from": "tosca.nodes.mec.MecApp",
            "properties": {k: {"type": "string" if not isinstance(v, list) else "list",
                               "constraints": [{"equal": v}], "default": v}
                           for k, v in defaults.items()}}},
        "topology_template": {"node_templates": {
            "App": {"type": node_type,
                    "properties": {"mec_version": ["3.2.1"], "flavour_id": "simple",
                                   "flavour_description": "",
                                   "product_info_name": f"{app} (tests)",
                                   "app_dns_rule": dns, "app_traffic_rule": traffic}},
            "AppCp": {"type": "tosca.nodes.nfv.VduCp",
                      "properties": {"layer_protocols": ["ipv4"]},
                      "requirements": [{"virtual_binding": "Vdu"}]},
        }},
    }
    nodes = doc["topology_template"]["node_templates"]
    art_props = {"name": f"{app}-image", "version": version,
                 "checksum": {"algorithm": "sha-256", "hash": image_sha}}
    if kind == "container":
        nodes["Vdu"] = {"type": "tosca.nodes.nfv.Vdu.OsContainer", "properties": {
            "name": app, "description": "the app container",
            "requested_cpu_resources": 500, "requested_memory_resources": "64 MiB"},
            "artifacts": {"sw_image": {"type": "tosca.artifacts.nfv.SwImage",
                                       "file": image_file,
                                       "properties": {**art_props,
                                                      "container_format": "docker"}}}}
    else:
        nodes["Vdu"] = {"type": "tosca.nodes.nfv.Vdu.Compute", "properties": {
            "name": app, "description": "the app VM", "boot_order": False,
            "vdu_profile": {"min_number_of_instances": 1, "max_number_of_instances": 1}},
            "capabilities": {"virtual_compute": {"properties": {
                "virtual_cpu": {"num_virtual_cpu": 1},
                "virtual_memory": {"virtual_mem_size": "256 MiB"}}}},
            "requirements": [{"virtual_storage": "Data"}],
            "artifacts": {"sw_image": {"type": "tosca.artifacts.nfv.SwImage",
                                       "file": image_file,
                                       "properties": {**art_props, "container_format": "bare",
                                                      "disk_format": "qcow2",
                                                      "min_disk": "1 GB",
                                                      "min_ram": "256 MiB"}}}}
        nodes["Data"] = {"type": "tosca.nodes.nfv.Vdu.VirtualBlockStorage",
                         "properties": {"virtual_block_storage_data":
                                        {"size_of_storage": "1 GB"}}}
    return dump(doc)


def eg_appd(kind: str, app: str, image_name: str, vip: str, version: str = "1.0") -> bytes:
    """An EdgeGallery MainServiceTemplate.yaml."""
    dns, traffic = rules(app, vip, snake=False)
    doc = {
        "tosca_definitions_version": "tosca_simple_profile_yaml_1_2",
        "description": f"{app}: EdgeGallery-style APPD written by the tests",
        "imports": ["nfv_vnfd_types_v1_0.yaml"],
        "metadata": {"template_name": app, "template_author": "tests",
                     "template_version": "1.0.0", "vnfm_type": "MEPM", "vnfd_id": app,
                     "vnfd_version": version, "vnfd_name": app,
                     "vnfd_description": f"{app} EdgeGallery-style"},
        "topology_template": {
            "inputs": {"DC_ID": {"type": "string", "default": "x"}},
            "node_templates": {
                "Simple_VNF": {"type": "tosca.nodes.nfv.VNF", "properties": {
                    "vnfd_id": app, "vnfd_version": version, "provider": "tests",
                    "product_name": app, "software_version": version,
                    "product_info_name": app, "product_info_description": f"{app} app",
                    "flavour_id": "default", "flavour_description": "default flavor"}},
                "logic0": {"type": "Tests.nodes.EgCompute", "properties": {
                    "name": "logic0", "description": "the app",
                    "sw_image_data": {"name": image_name},
                    "vdu_profile": {"min_number_of_instances": 1,
                                    "max_number_of_instances": 1}},
                    "capabilities": {"virtual_compute": {"properties": {
                        "virtual_memory": {"virtual_mem_size": 64 if kind == "container"
                                           else 256},
                        "virtual_cpu": {"num_virtual_cpu": 1},
                        "virtual_local_storage": {"size_of_storage": 1}}}}},
                "MEC_APP_CP0": {"type": "tosca.nodes.nfv.VduCp", "properties": {
                    "description": "network", "vnic_name": "eth0", "order": 0,
                    "vnic_type": "normal"},
                    "requirements": [{"virtual_binding": "logic0"},
                                     {"virtual_link": "MEC_APP_VL0"}]},
                "MEC_APP_VL0": {"type": "tosca.nodes.nfv.VnfVirtualLink", "properties": {
                    "vl_profile": {"network_name": "n6"}}},
                "app_configuration": {"type": "tosca.nodes.nfv.app.configuration",
                                      "properties": {"appSupportMp1": True, "appName": app,
                                                     "appTrafficRule": traffic,
                                                     "appDNSRule": dns}},
            }},
    }
    return dump(doc)


EG_TYPES = dump({
    "tosca_definitions_version": "tosca_simple_profile_yaml_1_2",
    "node_types": {"Tests.nodes.EgCompute": {"derived_from": "tosca.nodes.nfv.Vdu.Compute"}},
})


# -- layouts -----------------------------------------------------------------------

def sol004(path: Path, appd: bytes, image_member: str, image: bytes,
           entry: str = "Definitions/app.yaml", entry_manifest: bool = True,
           manifest_name: str | None = None, extra: dict[str, bytes] | None = None,
           list_meta: bool = True) -> Path:
    """A SOL004 CSAR; without `entry_manifest`, the manifest is the root
    .mf named like the entry definitions (SOL004 before 2.6)."""
    mf = manifest_name or (Path(entry).stem + ".mf")
    files = {entry: appd, image_member: image, **(extra or {})}
    files[META] = tosca_meta(entry, mf if entry_manifest else None)
    md = {"vnfd_id": "x", "vnf_provider_id": "tests", "vnf_product_name": "x",
          "vnf_software_version": "1.0", "vnf_package_version": "1.0",
          "vnf_release_date_time": "2026-12-01T10:00:00+00:00"}
    files[mf] = manifest(files, md, skip=() if list_meta else (META,))
    return write_zip(path, files)


def edgegallery_files(kind: str, app: str, image: bytes, vip: str, version: str = "1.0",
                      checksum: str | None = "md5", appd: bytes | None = None) -> dict:
    """The files of an EdgeGallery-style CSAR (before zipping), so a test
    can break one of them."""
    image_file = "app.tar" if kind == "container" else "app.qcow2"
    image_name = f"{app}:{version}" if kind == "container" else f"{app}-vm"
    inner = f"{app}/{image_file}"
    appd_zip = zip_bytes({
        "TOSCA_VNFD.meta": ("VNFD-Meta-File-Version: 1.0\nCSAR-Version: 1.1\n"
                            "Created-by: EdgeGallery\n"
                            "Entry-Definitions: Definition/MainServiceTemplate.yaml\n\n"
                            "Name: Definition/MainServiceTemplate.yaml\nContent-Type: VNFD\n"
                            ).encode(),
        "Definition/MainServiceTemplate.yaml": appd or eg_appd(kind, app, image_name, vip,
                                                               version),
        "Definition/nfv_vnfd_types_v1_0.yaml": EG_TYPES,
    }, deflate=True)
    image_zip = zip_bytes({inner: image}, deflate=True)
    desc = {"id": "1", "name": image_name, "version": version,
            "containerFormat": "dockerImage" if kind == "container" else "bare",
            "diskFormat": "dockerImage" if kind == "container" else "qcow2",
            "minDisk": 1, "minRam": 64, "size": len(image) >> 20,
            "swImage": f"Image/{app}.zip/{inner}", "operatingSystem": "linux",
            "supportedVirtualisationEnvironment": "linux"}
    if checksum == "md5":
        desc["checksum"] = hashlib.md5(image).hexdigest()   # noqa: S324 - what EG writes
    elif checksum:
        desc["checksum"] = checksum
    files = {f"APPD/{app}.zip": appd_zip, f"Image/{app}.zip": image_zip,
             "Image/SwImageDesc.json": json.dumps([desc], indent=4).encode(),
             "Artifacts/ChangeLog.txt": b"1.0: first\n"}
    files[META] = tosca_meta(f"APPD/{app}.zip", None, "EdgeGallery", (
        f"\nName: APPD/{app}.zip\nContent-Type: appd\n\n"
        f"Name: Image/{app}.zip\nContent-Type: Image\n\n"
        "Name: Image/SwImageDesc.json\nContent-Type: SwImageDesc\n"))
    return files


def edgegallery(path: Path, kind: str, app: str, image: bytes, vip: str,
                version: str = "1.0", files: dict | None = None, **kw) -> Path:
    files = dict(files or edgegallery_files(kind, app, image, vip, version, **kw))
    md = {"app_product_name": app, "app_provider_id": "tests",
          "app_package_version": version, "app_release_data_time": "1611217260210",
          "app_type": app, "app_package_description": "written by the tests"}
    files[f"{app}.mf"] = manifest(files, md, skip=(META,))
    return write_zip(path, files)


# -- a real lab ------------------------------------------------------------------------

@contextmanager
def lab(prefix: str):
    """A `mecorch serve` of the one lab (tests/support/lab.py) with names of
    its own: state dir, host id, docker network, libvirt pool and network
    on a free subnet, iptables chain prefix and dnsmasq port; what the test
    made is removed through the API at the end, nothing of the host's may
    be left behind, and the host's infrastructure goes."""
    names = thelab.Names(prefix)
    tmp = thelab.private_dir(prefix)
    host = thelab.host_config(names)
    cfg = thelab.lab_config(tmp, [host])
    serve = thelab.Serve(cfg, tmp)
    left = None
    try:
        serve.start()
        yield {"c": serve.client, "host": names.host_id, "dns_port": host["mep"]["dns_port"],
               "tmp": tmp, "tag": names.tag, "log": serve.log_path}
    finally:
        try:
            if serve.alive:
                thelab.clear(serve.client)
                left = thelab.leftovers(host)
        finally:
            serve.stop()
            thelab.remove_host(host, cfg["state_dir"], cfg["run_dir"])
            shutil.rmtree(tmp, ignore_errors=True)
    assert left == [], f"the lab's host left {left}"


def onboard(c, path: Path, name: str = "p") -> dict:
    pkg, _ = c.post(PKGS, {"appPkgName": name, "appPkgVersion": "1.0",
                           "appPkgPath": str(path),
                           "checksum": {"algorithm": "SHA-256",
                                        "hash": sha(path.read_bytes())}})
    return pkg


def deploy(c, host: str, app_d_id: str, **body) -> tuple[dict, dict]:
    inst, _ = c.post(INST, {"appDId": app_d_id})
    op, _ = c.post(f"{INST}/{inst['id']}/instantiate",
                   {"selectedMECHostInfo": [{"hostId": {"id": host}}], **body})
    op = c.wait_op(op, timeout=300)
    return c.get(f"{INST}/{inst['id']}"), op


def terminate(c, iid: str) -> dict:
    op, _ = c.post(f"{INST}/{iid}/terminate", {"terminationType": "FORCEFUL"})
    return c.wait_op(op, timeout=120)


def dig(port: int, name: str) -> str:
    return thelab.dig(port, name, tries=3)


def http(url: str, tries: int = 100) -> str:
    return thelab.http_get(url, tries)


def leftovers(iid: str) -> list[str]:
    found = []
    if run("docker", "ps", "-aq", "--filter", f"label=mecorch.instance={iid}").stdout.split():
        found.append("containers")
    if run("docker", "volume", "ls", "-q", "--filter",
           f"label=mecorch.instance={iid}").stdout.split():
        found.append("volumes")
    if iid in run("virsh", "-q", "-c", "qemu:///system", "list", "--all", "--name").stdout:
        found.append("domain")
    if f"mecorch:{iid}" in run("iptables-save").stdout:
        found.append("iptables rules")
    return found
