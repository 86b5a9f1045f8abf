"""The driver API: the contracts a CIM, VIM or MEP driver implements and
the optional capabilities it declares by inheriting them (`contracts`), the value objects at that boundary (`model`) and the image
catalog both compute drivers keep (`catalog`). Drivers (the top-level
`drivers` package) import this, the kernel and `spec.rules` only."""
