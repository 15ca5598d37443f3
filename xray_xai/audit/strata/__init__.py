"""Hidden stratification and shortcuts: where a model fails and what it leans on (``xray-xai strata``).

* :mod:`.subgroups` - subgroups from the films' metadata, each against the rest, tested and flagged;
* :mod:`.stats` - DeLong, Fisher, Holm/Benjamini-Hochberg, bootstrap differences;
* :mod:`.shortcuts` - a binary column (hardware, a marker): performance with and without, the prediction's
  dependence on it, and a concept test (TCAV, :mod:`.tcav`);
* :mod:`.clusters` - the clusters of ``xray-xai cluster`` as strata;
* :mod:`.service` - the command: predictions once (cached, or a CSV of ``xray-xai predict``), every analysis, the
  files written.
"""
