from django.urls import path
from shop import views

urlpatterns = [
    path("transfer", views.transfer),
    path("totals", views.totals),
]
