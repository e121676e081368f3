import random

from django.db import transaction
from django.db.models import Sum
from django.http import JsonResponse

from .models import Account, Counter, Transfer


def transfer(request):
    """Read-modify-write in an atomic block: balances read, changed in Python, saved."""
    ids = list(Account.objects.values_list("id", flat=True))
    a, b = random.sample(ids, 2)
    with transaction.atomic():
        source = Account.objects.get(id=a)
        target = Account.objects.get(id=b)
        counter = Counter.objects.get(name="transfers")
        source.balance -= 1
        target.balance += 1
        counter.value += 1
        source.save()
        target.save()
        counter.save()
        Transfer.objects.create(source=source, target=target, amount=1)
    return JsonResponse({"ok": True})


def totals(request):
    return JsonResponse(
        {
            "sum": Account.objects.aggregate(s=Sum("balance"))["s"],
            "counter": Counter.objects.get(name="transfers").value,
            "transfers": Transfer.objects.count(),
        }
    )
