import gc
import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()
# Every module a request can need is loaded now (the URLconf imports the views, DRF, the services), so move
# what is loaded into the permanent generation: the cyclic collector otherwise walks these ~100,000
# objects at each full collection, which a request allocating a few thousand objects (the duplicate
# groups, a page of files) sets off every few requests, ~50 ms with every thread of the worker stopped
# (docs/BENCHMARKS.md, load test). Objects made later are collected as before.
get_resolver().url_patterns
gc.freeze()
# A young collection every 700 net allocations (Python's default) is ~150 of them in one duplicates
# request, each walking the survivors of the ones before: 5-7 ms a request. A request's objects are
# mostly freed by reference counting when it ends, so collecting 50 times less often costs little memory.
gc.set_threshold(35_000, 10, 10)
