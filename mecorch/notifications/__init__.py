"""MEC 010-2 subscriptions (`subscriptions`) and the stored, ordered,
retried sender of their notifications (`sender`)."""
