"""Running invocations: admission, the invoker, pools, environments and the zygote client."""
