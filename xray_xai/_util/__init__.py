"""Plumbing shared by every floor: atomic writes, progress bars, the allocator tweak."""
