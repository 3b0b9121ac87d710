"""The usage dashboard in the admin: spend and tokens over time, top spenders, limits, CSV."""
