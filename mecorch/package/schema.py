"""JSON schemas of the NFV types the ETSI MEC 010-2 AppD refers to.

MEC010-2_AppPkgMgmt.yaml declares SwImageDescriptor, VirtualComputeDescription
and VirtualStorageDescriptor only as placeholders ("Ref NFV", type string);
these are the ETSI GS NFV-IFA 011 structures (SwImageDesc, VirtualComputeDesc,
VirtualStorageDesc) that mecorch reads, to put in their place when an AppD is
checked against the ETSI schema or the schema is published. They are also
the keys mecorch.package.appd accepts in those structures (any other is
refused), and the types it checks the ones it does not read against. Deviations from
IFA 011, all deliberate: numVirtualCpu is a number (a container may get 0.5
CPU); checksum, diskFormat, minDisk and size of SwImageDesc are optional (the
package manifest already carries every file's SHA-256; a DOCKER image has no
disk format). Units: MB for memory, GB for disks.
"""

NFV_SCHEMAS = {
    "VirtualComputeDescription": {
        "type": "object",
        "required": ["virtualComputeDescId", "virtualCpu", "virtualMemory"],
        "properties": {
            "virtualComputeDescId": {"type": "string"},
            "logicalNode": {"type": "array"},
            "requestAdditionalCapabilities": {"type": "array"},
            "computeRequirements": {"type": "array"},
            "virtualMemory": {
                "type": "object",
                "required": ["virtualMemSize"],
                "properties": {
                    "virtualMemSize": {"type": "number", "minimum": 0,
                                       "description": "MB"},
                    "virtualMemOversubscriptionPolicy": {"type": "string"},
                    "vduMemRequirements": {"type": "array"},
                    "numaEnabled": {"type": "boolean"}}},
            "virtualCpu": {
                "type": "object",
                "required": ["numVirtualCpu"],
                "properties": {
                    "cpuArchitecture": {"type": "string"},
                    "numVirtualCpu": {"type": "number", "exclusiveMinimum": 0},
                    "virtualCpuClock": {"type": "number"},
                    "virtualCpuOversubscriptionPolicy": {"type": "string"},
                    "vduCpuRequirements": {"type": "array"},
                    "virtualCpuPinning": {"type": "object"}}}}},
    "SwImageDescriptor": {
        "type": "object",
        "required": ["id", "name", "version", "containerFormat", "swImage"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "version": {"type": "string"},
            "checksum": {"oneOf": [
                {"type": "string"},
                {"type": "object", "required": ["algorithm", "hash"],
                 "properties": {"algorithm": {"type": "string"}, "hash": {"type": "string"}}}]},
            "containerFormat": {"type": "string", "enum": [
                "AKI", "AMI", "ARI", "BARE", "DOCKER", "OVA", "OVF"]},
            "diskFormat": {"type": "string", "enum": [
                "AKI", "AMI", "ARI", "ISO", "QCOW2", "RAW", "VDI", "VHD", "VHDX", "VMDK"]},
            "minDisk": {"type": "number", "minimum": 0, "description": "GB"},
            "minRam": {"type": "number", "minimum": 0, "description": "MB"},
            "size": {"type": "number", "minimum": 0, "description": "GB"},
            "swImage": {"type": "string"},
            "operatingSystem": {"type": "string"},
            "supportedVirtualisationEnvironment": {"type": "array",
                                                   "items": {"type": "string"}}}},
    "VirtualStorageDescriptor": {
        "type": "object",
        "required": ["id", "typeOfStorage", "sizeOfStorage"],
        "properties": {
            "id": {"type": "string"},
            "typeOfStorage": {"type": "string", "enum": ["BLOCK", "OBJECT", "FILE"]},
            "sizeOfStorage": {"type": "number", "minimum": 0, "description": "GB"},
            "vduStorageRequirements": {"type": "array"},
            "rdmaEnabled": {"type": "boolean"},
            "swImageDesc": {"type": "string"}}},
}
