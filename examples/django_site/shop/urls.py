"""One route: POST /orders e-mails the customer and answers with the delivery report."""

from django.urls import path

from . import views

urlpatterns = [path("orders", views.order_confirmation)]
