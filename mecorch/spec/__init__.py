"""What a request means, decided without touching a backend: one
instantiate request planned once (`plan`), the deployment manner and
resources of an instantiation (`decision`), the orchestration information
it carries (`orchestration_info`: Kubernetes Pods, TOSCA), and the MEC 011
traffic and DNS rules (`rules`)."""
