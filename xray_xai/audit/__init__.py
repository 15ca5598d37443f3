"""Auditing explanations with numbers: faithfulness, sanity, localisation, controls, shortcuts."""
