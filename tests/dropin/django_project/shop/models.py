from django.db import models


class Account(models.Model):
    name = models.CharField(max_length=40, unique=True)
    balance = models.IntegerField()


class Counter(models.Model):
    name = models.CharField(max_length=40, unique=True)
    value = models.IntegerField(default=0)


class Transfer(models.Model):
    source = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="sent")
    target = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="received")
    amount = models.IntegerField()
