"""A federation that outlives its runs: coordinator, nodes, bundles and their signatures.

Nothing here is imported by `import roost`; each command imports the module it needs.
"""
