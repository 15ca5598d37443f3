"""What a plugin author imports: the contracts, the registry, the torch bases and the layer helpers."""
