"""Tests of logicbundle.api: the models, the generated CRD, the examples."""
