"""Kernel drops: packets the kernel freed as dropped, by its reason (bpf/drops.c)."""
