"""Unit tests of logicbundle.bundle: the artifact format, pack, safe unpack and audit."""
