"""What ``install`` puts into the Mistral and Keystone virtualenvs.

The version ranges are the contract; the constraints are the exact sets verified
to work together (Python 3.11, November 2026), so a fresh machine gets the same
servers. Unpinned, pip takes the newest oslo.*, SQLAlchemy, WSME... of the day,
which an older Mistral or Keystone may not survive. Editing either changes the
install fingerprint, so existing virtualenvs are rebuilt at the next ``install``.
"""

from __future__ import annotations

from .install import VenvSpec

__all__ = ["KEYSTONE", "MISTRAL"]

MISTRAL_CONSTRAINTS = """
alembic==1.20.1
amqp==5.4.2
attrs==26.1.0
bcrypt==5.0.0
cachetools==8.0.1
certifi==2026.10.18
cffi==2.1.1
charset-normalizer==3.5.2
cheroot==11.1.2
cotyledon==2.2.0
croniter==7.0.0
cryptography==50.0.2
debtcollector==3.1.0
decorator==5.3.1
dnspython==2.9.2
dogpile.cache==1.5.0
eventlet==0.41.3
fasteners==0.20
futurist==3.5.0
greenlet==3.5.6
idna==3.20
importlib_metadata==10.2.0
invoke==3.0.3
iso8601==2.1.0
jaraco.functools==4.6.0
Jinja2==3.1.6
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
keystoneauth1==5.18.1
keystonemiddleware==13.0.1
kombu==5.7.0
lazy-importer==0.1.0
Mako==1.4.3
MarkupSafe==3.0.4
mistral==23.0.0
mistral-lib==3.6.0
more-itertools==11.2.1
msgpack==1.2.4
netaddr==1.3.0
networkx==3.6.1
os-service-types==1.9.0
oslo.cache==4.3.0
oslo.concurrency==7.6.1
oslo.config==10.7.0
oslo.context==6.5.0
oslo.db==18.1.1
oslo.i18n==6.9.0
oslo.log==8.3.2
oslo.messaging==18.3.1
oslo.metrics==0.17.0
oslo.middleware==8.2.0
oslo.policy==6.0.1
oslo.serialization==5.11.0
oslo.service==4.8.0
oslo.utils==10.2.0
osprofiler==4.4.0
packaging==26.3
paramiko==5.1.0
Paste==3.10.1
PasteDeploy==3.1.0
pbr==7.1.3
pecan==1.8.0
prettytable==3.18.0
prometheus_client==0.26.0
psutil==7.2.2
psycopg2-binary==2.9.13
pycadf==4.1.0
pycparser==3.12
PyJWT==2.15.1
PyNaCl==1.6.2
pyparsing==3.3.3
python-dateutil==4.0.0
python-keystoneclient==6.0.0
PyYAML==6.0.3
referencing==0.37.0
repoze-lru==0.8
requests==2.34.2
rfc3986==2.0.0
Routes==2.5.1
rpds-py==2026.9.1
setproctitle==1.3.8
simplegeneric==0.8.1
six==1.17.0
SQLAlchemy==2.1.9
statsd==4.0.1
stevedore==5.10.0
tenacity==9.2.1
testresources==2.1.2
testscenarios==0.7.0
typing_extensions==4.16.0
tzdata==2026.6
urllib3==2.8.0
vine==5.1.0
wcwidth==0.9.4
WebOb==1.8.11
wrapt==2.5.2
WSME==0.13.0
yappi==1.7.6
yaql==3.2.0
zipp==4.1.2
"""

KEYSTONE_CONSTRAINTS = """
alembic==1.20.1
amqp==5.4.2
aniso8601==10.0.1
attrs==26.1.0
bcrypt==5.0.0
blinker==1.9.0
cachetools==8.0.2
certifi==2026.10.19.post1
cffi==2.1.1
charset-normalizer==3.5.3
click==8.5.1
cryptography==50.0.2
debtcollector==3.1.0
decorator==5.3.1
defusedxml==0.7.1
dnspython==2.9.2
dogpile.cache==1.5.0
elementpath==4.8.0
eventlet==0.41.3
fasteners==0.20
Flask==3.1.3
Flask-RESTful==0.3.10
futurist==3.5.0
greenlet==3.5.6
gunicorn==27.0.1
idna==3.20
iso8601==2.1.0
itsdangerous==2.2.0
Jinja2==3.1.6
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
keystone==30.0.0
keystoneauth1==5.18.1
keystonemiddleware==13.0.1
kombu==5.7.0
Mako==1.4.3
MarkupSafe==3.0.4
msgpack==1.2.4
netaddr==1.3.0
oauthlib==4.0.1
os-service-types==1.9.0
oslo.cache==4.3.0
oslo.concurrency==7.6.1
oslo.config==10.7.0
oslo.context==6.5.0
oslo.db==18.1.1
oslo.i18n==6.9.0
oslo.log==8.3.2
oslo.messaging==18.3.1
oslo.metrics==0.17.0
oslo.middleware==8.2.0
oslo.policy==6.0.1
oslo.serialization==5.11.0
oslo.service==4.8.0
oslo.upgradecheck==2.8.0
oslo.utils==10.2.0
osprofiler==4.4.0
packaging==26.4
Paste==3.10.1
PasteDeploy==3.1.0
pbr==7.1.3
prettytable==3.18.0
prometheus_client==0.26.0
psutil==7.2.2
pycadf==4.1.0
pycparser==3.12
PyJWT==2.15.1
pyOpenSSL==26.4.0
pyparsing==3.3.3
pysaml2==7.5.5
python-dateutil==4.0.0
python-keystoneclient==6.0.0
pytz==2026.6
PyYAML==6.0.4
referencing==0.37.0
repoze-lru==0.8
requests==2.34.2
rfc3986==2.0.0
Routes==2.5.1
rpds-py==2026.9.1
six==1.17.0
SQLAlchemy==2.1.9
statsd==4.0.1
stevedore==5.10.0
testresources==2.1.2
testscenarios==0.7.0
typing_extensions==4.16.0
tzdata==2026.6
urllib3==2.8.0
vine==5.1.0
wcwidth==0.9.4
WebOb==1.8.11
Werkzeug==3.1.9
wrapt==2.5.2
xmlschema==2.5.1
yappi==1.7.6
"""

MISTRAL = VenvSpec(
    name="Mistral",
    venv_variable="MISTRAL_VENV",
    python_variable="MISTRAL_PYTHON",
    default_venv=("venv",),
    requirements=("mistral>=23,<24", "psycopg2-binary>=2.9,<3"),
    constraints=MISTRAL_CONSTRAINTS,
    constraints_file="mistral-constraints.txt",
    check_imports=(
        "import sys, importlib.metadata as m\n"
        "v = m.version('mistral')\n"
        "import mistral.config, mistral.db.v2.api, psycopg2\n"
        "sys.exit(0 if v.split('.')[0] == '23' else 3)\n"
    ),
    binaries=("mistral-server",),
)

KEYSTONE = VenvSpec(
    name="Keystone",
    venv_variable="KEYSTONE_VENV",
    python_variable="KEYSTONE_PYTHON",
    default_venv=("keystone-venv",),
    requirements=("keystone>=30,<31", "gunicorn>=22,<28"),
    constraints=KEYSTONE_CONSTRAINTS,
    constraints_file="keystone-constraints.txt",
    check_imports=(
        "import sys, importlib.metadata as m\n"
        "v = m.version('keystone')\n"
        "import keystone.server.wsgi, gunicorn\n"
        "sys.exit(0 if v.split('.')[0] == '30' else 3)\n"
    ),
    binaries=("keystone-manage", "gunicorn"),
)
